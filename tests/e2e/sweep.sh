#!/bin/sh
# tests/e2e/sweep.sh: 200 noop jobs over 4 workers; every job runs exactly
# once (one attempt each) and all 4 workers take part.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

start_daemon
wait_registry
for i in 1 2 3 4; do start_worker "w$i" --slots 2; done
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 4
check "4 workers are up" $?
"$E2E_TOOL" submit "$db" noop 200
check "200 noop jobs submitted" $?
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 200
check "all 200 jobs succeeded" $?
is_one=$(sql "SELECT count(*) FROM jobs WHERE attempts = 1 AND state = 'succeeded'")
check "each job ran exactly once (attempts = 1: $is_one of 200)" $([ "$is_one" = 200 ]; echo $?)
used=$(sql "SELECT count(DISTINCT worker) FROM jobs")
check "the sweep used all 4 workers ($used)" $([ "$used" = 4 ]; echo $?)
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
