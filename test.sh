#!/bin/bash
# test.sh: the README's second command. Installs what the tests need, builds,
# runs the whole suite (`make check`: unit, integration, chaos, browser and
# the GPU checks, which show as skipped without a GPU) and ends with the line
# "N passed, N failed, N skipped". Exit status 0 only when nothing failed.
cd "$(dirname "$0")" || exit 1
. build-aux/setup.sh
setup_packages test || exit 1
setup_npm tests/formats || exit 1
setup_npm web || exit 1
setup_build || { echo "0 passed, 1 failed"; exit 1; }
jobs=$(nproc 2>/dev/null || echo 2)
setup_say "running the test suite (make check)"
make -j"$jobs" check "$@"
status=$?
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
