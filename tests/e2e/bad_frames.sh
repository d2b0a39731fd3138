#!/bin/sh
# tests/e2e/bad_frames.sh: a raw ZeroMQ client sends malformed frames, an
# unknown version, an oversized message, bad JSON, unknown fields, wrong
# types and junk; each gets an ERROR and modulad keeps serving workers.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
"$E2E_TOOL" hostile "$endpoint" >"$tmp/hostile.tap"
while IFS= read -r line; do
	case $line in
	"ok "*) check "${line#ok * - }" 0 ;;
	"not ok "*) check "${line#not ok * - }" 1 ;;
	esac
done <"$tmp/hostile.tap"
start_worker w1
"$E2E_TOOL" submit "$db" noop 5
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 5
check "the broker still runs jobs afterwards" $?
kill -0 "$daemon_pid"
check "the broker process is alive" $?
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
