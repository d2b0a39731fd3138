#!/bin/bash
# test.sh: the README's second command. Installs what the tests need, builds,
# runs the whole suite (`make check`: unit, integration, chaos, browser and
# the GPU checks, which show as skipped without a GPU) and ends with the line
# "N passed, N failed, N skipped". Exit status 0 only when nothing failed.
#
#   ./test.sh [MAKE-ARGS]               in the source folder (./quickstart.sh's build)
#   ./test.sh --sanitizers [MAKE-ARGS]  the same suite built with AddressSanitizer and
#                                       UndefinedBehaviorSanitizer, in _build/sanitizers
#
# --sanitizers configures with --enable-sanitizers --without-cuda (CUDA code
# cannot be sanitized) in a copy of the sources (setup_sources says why);
# tests/subdir.am sets ASAN_OPTIONS and UBSAN_OPTIONS; each report in
# sanitizer-reports/ (from any program, even one whose output a test throws
# away) counts as a failure. CI runs both.
# MAKE-ARGS go to make check, e.g. TESTS=tests/lib-common.
cd "$(dirname "$0")" || exit 1
. build-aux/setup.sh
sanitizers=no
[ "$1" = --sanitizers ] && { sanitizers=yes; shift; }
setup_packages test || exit 1
setup_npm tests/formats || exit 1
setup_npm web || exit 1
if [ $sanitizers = yes ]; then
	setup_sources _build/sanitizers && cd _build/sanitizers &&
		MODULA_CONFIGURE_FLAGS="${MODULA_CONFIGURE_FLAGS:-} --enable-sanitizers --without-cuda" setup_build
else
	setup_build
fi || { echo "0 passed, 1 failed"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
rm -rf sanitizer-reports
setup_say "running the test suite (make check$([ $sanitizers = yes ] && echo ', sanitizers'))"
make -j"$jobs" check "$@"
status=$?
reports=$(find sanitizer-reports -type f 2>/dev/null | wc -l)
if [ "$reports" -gt 0 ]; then
	echo "$reports sanitizer report(s) in $PWD/sanitizer-reports:"
	head -n 40 sanitizer-reports/*
	status=1
fi
summary() { sed -n "s/^# $1: *\\([0-9]*\\).*/\\1/p" test-suite.log | head -n1; }
if [ -f test-suite.log ]; then
	pass=$(summary PASS); skip=$(summary SKIP); xfail=$(summary XFAIL)
	fail=$(summary FAIL); xpass=$(summary XPASS); err=$(summary ERROR)
	failed=$(( ${fail:-0} + ${xpass:-0} + ${err:-0} ))
	[ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1
	echo "$(( ${pass:-0} + ${xfail:-0} )) passed, $failed failed, ${skip:-0} skipped"
else
	echo "0 passed, 1 failed"
	status=1
fi
exit $status
