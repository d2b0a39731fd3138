#!/bin/sh
# tests/fuzz/run.sh: run every libFuzzer target (tests/fuzz.am) for a
# bounded time, FUZZ_SECONDS each (default 10), starting from its seed
# corpus tests/fuzz/corpus/TARGET/; one TAP line per target. New inputs the
# fuzzer finds go to a temporary folder, never into the source tree; a crash
# is kept as $top_builddir/tests/fuzz/crash-TARGET-* for `fuzz-TARGET FILE`.
. "$top_srcdir/tests/lib.sh"

seconds=${FUZZ_SECONDS:-10}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for t in proto safetensors tokenizer api spec; do
	bin="$top_builddir/tests/fuzz/fuzz-$t"
	seeds="$top_srcdir/tests/fuzz/corpus/$t"
	mkdir -p "$tmp/$t"
	nseeds=$(ls "$seeds" | wc -l)
	TMPDIR=$tmp ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
		"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
		-print_final_stats=1 -artifact_prefix="$top_builddir/tests/fuzz/crash-$t-" \
		"$tmp/$t" "$seeds" >"$tmp/$t.log" 2>&1
	st=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/$t.log")
	cov=$(grep -o 'cov: [0-9]*' "$tmp/$t.log" | tail -n 1)
	check "fuzz-$t: ${runs:-0} runs in ${seconds}s from $nseeds seeds ($cov), no crash" $st
	if [ "$st" -ne 0 ]; then
		grep -m 1 -A 25 'ERROR\|runtime error\|deadly signal' "$tmp/$t.log" | sed 's/^/# /'
		ls "$top_builddir/tests/fuzz/crash-$t-"* 2>/dev/null | sed 's/^/# kept: /'
	fi
	[ "$seeds" != "" ] && [ "$nseeds" -gt 0 ]
	check "fuzz-$t has a seed corpus ($nseeds files)" $?
done
done_testing
