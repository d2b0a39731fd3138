#!/bin/sh
# tests/chaos/sigstop.sh: a worker that hangs (SIGSTOP) while running a
# job loses its lease: the broker declares it dead, the job runs again on
# the other worker and succeeds. After SIGCONT the hung worker finishes
# its stale attempt and reports it: the report is refused, the recorded
# result (attempt, worker) does not change, and both workers go on working.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
start_worker wa
start_worker wb
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 2
"$E2E_TOOL" submit "$db" sleep 1 '{"seconds": 3}'
wait_for "SELECT state FROM jobs WHERE id = 1" running
owner=$(sql "SELECT lease_owner FROM jobs WHERE id = 1")
kill -STOP "$(cat "$tmp/$owner.pid")"
check "stopped the worker '$owner' running job 1 (SIGSTOP)" $?
wait_for "SELECT state FROM workers WHERE id = '$owner'" down
check "the broker declares '$owner' dead" $?
wait_for "SELECT state FROM jobs WHERE id = 1" succeeded
check "job 1 ran again elsewhere and succeeded" $?
before=$(sql "SELECT attempts || ' ' || worker || ' ' || finished_ms || ' ' || coalesce(result, '') FROM jobs WHERE id = 1")
kill -CONT "$(cat "$tmp/$owner.pid")"
# The stale attempt's sleep is over by now: its report arrives at once.
wait_for "SELECT state FROM workers WHERE id = '$owner'" up
check "'$owner' comes back after SIGCONT" $?
sleep 2
after=$(sql "SELECT attempts || ' ' || worker || ' ' || finished_ms || ' ' || coalesce(result, '') FROM jobs WHERE id = 1")
check "the late report changed nothing (attempts worker finished result: $after)" \
	$([ "$before" = "$after" ] && [ "${after%% *}" = 2 ] && [ "$(echo "$after" | cut -d' ' -f2)" != "$owner" ]; echo $?)
grep -q 'stale' "$tmp/$owner.log"
check "the late report was refused (logged)" $?
"$E2E_TOOL" submit "$db" noop 6
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 7
check "both workers go on taking jobs" $?
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
