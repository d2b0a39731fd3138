#!/bin/sh
# tests/e2e/sigterm.sh: SIGTERM to a worker running a job: it hands the job
# back (without using up an attempt's budget), says DISCONNECT and exits 0;
# another worker finishes the job.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
start_worker wa
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 1
"$E2E_TOOL" submit "$db" sleep 1 '{"seconds": 30}'
wait_for "SELECT state FROM jobs WHERE id = 1" running
check "the sleep job runs on wa" $?
pid=$(cat "$tmp/wa.pid")
kill -TERM "$pid"
wait "$pid"
check "wa exits 0 on SIGTERM" $?
pids=""
wait_for "SELECT state FROM jobs WHERE id = 1" ready 50
check "the job was handed back (ready)" $?
wait_for "SELECT state FROM workers WHERE id = 'wa'" down 50
check "wa is marked down" $?
"$E2E_TOOL" submit "$db" noop 1
start_worker wb
wait_for "SELECT count(*) FROM jobs WHERE state = 'running' OR state = 'succeeded'" 2
check "wb takes the handed-back job" $?
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
