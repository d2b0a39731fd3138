#!/bin/sh
# tests/e2e/kill_worker.sh: kill -9 of the worker running a sleep job: the
# broker notices the silence, requeues the job, the other worker finishes it.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
start_worker wa
start_worker wb
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 2
"$E2E_TOOL" submit "$db" sleep 1 '{"seconds": 2}'
wait_for "SELECT state FROM jobs WHERE id = 1" running
check "the sleep job runs" $?
owner=$(sql "SELECT lease_owner FROM jobs WHERE id = 1")
kill -9 "$(cat "$tmp/$owner.pid")"
check "killed its worker '$owner' with SIGKILL" $?
wait_for "SELECT state FROM workers WHERE id = '$owner'" down
check "the broker marks '$owner' down" $?
wait_for "SELECT state FROM jobs WHERE id = 1" succeeded
check "the job was requeued and finished" $?
row=$(sql "SELECT attempts || ' ' || worker FROM jobs WHERE id = 1")
check "on a second attempt by the other worker ($row)" \
	$([ "${row%% *}" = 2 ] && [ "${row#* }" != "$owner" ]; echo $?)
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
