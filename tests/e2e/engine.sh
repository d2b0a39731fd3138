#!/bin/sh
# tests/e2e/engine.sh: jobs that run as engine child processes: progress
# becomes metrics, checkpoints and outputs are uploaded to modulad's
# artifact store over HTTP, the job's folder is the engine's out_dir, a crash after a
# checkpoint is retried and resumes from it (fetched from the store), a
# job that always crashes ends failed, and the worker survives all of it.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
start_worker w1 --engine "$top_srcdir/tests/e2e/fake_engine.sh"
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 1
"$E2E_TOOL" submit "$db" train 1 '{"crash_once": true, "out_dir": "/elsewhere"}'
wait_for "SELECT state FROM jobs WHERE id = 1" succeeded 150
check "a job that crashed after its checkpoint succeeded on a retry" $?
att=$(sql "SELECT attempts FROM jobs WHERE id = 1")
check "on attempt 2 ($att)" $([ "$att" = 2 ]; echo $?)
res=$(sql "SELECT value FROM evaluations WHERE job_id = 1 AND domain = 'flan'")
check "the retry resumed from the uploaded checkpoint (evaluation $res)" $([ "$res" = 1.0 ]; echo $?)
sha=$(sql "SELECT sha256 FROM job_outputs WHERE job_id = 1 AND name = 'expert'")
curl -sf -o "$tmp/out.bin" "$api/artifacts/$sha"
check "the output is recorded and in the store" $([ -n "$sha" ] && grep -q 'expert weights' "$tmp/out.bin"; echo $?)
n=$(sql "SELECT count(*) FROM metrics WHERE job_id = 1 AND key = 'loss'")
check "progress lines became loss metrics ($n points)" $([ "$n" -ge 2 ]; echo $?)
"$E2E_TOOL" submit "$db" train 1 '{"crash": true, "out_dir": "x"}'
wait_for "SELECT state FROM jobs WHERE id = 2" failed 200
check "a job whose engine always crashes ends failed" $?
err=$(sql "SELECT error FROM jobs WHERE id = 2")
diag "its error: $err"
kill -0 "$(cat "$tmp/w1.pid")"
check "the worker is still alive" $?
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
