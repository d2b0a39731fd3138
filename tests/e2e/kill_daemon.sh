#!/bin/sh
# tests/e2e/kill_daemon.sh: kill -9 of modulad mid-sweep, then
# a restart: the workers re-attach, every job ends succeeded exactly once,
# none is lost and none is duplicated.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
for i in 1 2 3 4; do start_worker "w$i" --slots 2; done
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 4
"$E2E_TOOL" submit "$db" sleep 48 '{"seconds": 1.5}'
wait_for "SELECT count(*) > 8 FROM jobs WHERE state = 'succeeded'" 1
check "the sweep is under way" $?
kill -9 "$daemon_pid"
wait "$daemon_pid" 2>/dev/null
done_before=$(sql "SELECT count(*) FROM jobs WHERE state = 'succeeded'")
diag "killed the daemon with $done_before of 48 done"
start_daemon
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 48 600
check "after the restart all 48 jobs succeeded" $?
others=$(sql "SELECT count(*) FROM jobs WHERE state <> 'succeeded'")
check "no job lost or left over ($others)" $([ "$others" = 0 ]; echo $?)
total=$(sql "SELECT count(*) FROM jobs")
check "no job duplicated ($total rows)" $([ "$total" = 48 ]; echo $?)
re=$(sql "SELECT count(*) FROM events WHERE kind = 'job.reattached'")
check "the workers re-attached their running jobs ($re)" $([ "$re" -gt 0 ]; echo $?)
diag "max attempts: $(sql "SELECT max(attempts) FROM jobs")"
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
