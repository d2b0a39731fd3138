# tests/lib.sh: TAP helpers for shell tests (sourced, never run).
# Usage: . "$top_srcdir/tests/lib.sh"; ok CMD... ; is "$a" "$b" what; done_testing
tap_n=0
tap_failed=0

# ok "what" CMD...: run CMD, pass when it exits 0.
ok() {
	what=$1; shift
	tap_n=$((tap_n + 1))
	if "$@" >/dev/null 2>&1; then echo "ok $tap_n - $what"
	else echo "not ok $tap_n - $what"; tap_failed=$((tap_failed + 1)); fi
}

# check "what" CONDITION-STATUS: pass when the given status is 0.
check() {
	what=$1; st=$2
	tap_n=$((tap_n + 1))
	if [ "$st" -eq 0 ]; then echo "ok $tap_n - $what"
	else echo "not ok $tap_n - $what"; tap_failed=$((tap_failed + 1)); fi
}

skip() {
	tap_n=$((tap_n + 1)); echo "ok $tap_n - $1 # SKIP $2"
}

diag() { echo "# $*"; }

done_testing() {
	echo "1..$tap_n"
	[ "$tap_failed" -eq 0 ]
}
