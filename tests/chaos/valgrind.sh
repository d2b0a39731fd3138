#!/bin/sh
# tests/chaos/valgrind.sh: modulad started, asked over HTTP (health, a job
# submission, a job list, a refused request) and stopped with SIGTERM under
# valgrind --leak-check=full: no memory error and no definite leak.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

data=$tmp/data
mkdir -p "$data"
op=$("$MODULAD" token create --data "$data" --role operator)
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 --log-file="$tmp/valgrind.log" \
	"$MODULAD" --data "$data" --http "127.0.0.1:$http_port" --broker "$endpoint" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
n=0
until curl -sf "$api/health" >/dev/null 2>&1 || [ $n -ge 600 ]; do sleep 0.1; n=$((n + 1)); done
curl -sf "$api/health" >/dev/null
check "modulad answers under valgrind" $?
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $op" -d '{"kind":"noop"}' "$api/jobs")
code="$code $(curl -s -o /dev/null -w '%{http_code}' "$api/jobs")"
code="$code $(curl -s -o /dev/null -w '%{http_code}' -d '{"kind":"noop"}' "$api/jobs")"
check "a submission, a list and a refused request ($code)" $([ "$code" = "201 200 401" ]; echo $?)
kill -TERM "$daemon_pid"
wait "$daemon_pid"
st=$?
daemon_pid=""
check "modulad stops cleanly, valgrind finds no error and no definite leak (exit $st)" $([ "$st" = 0 ]; echo $?)
[ "$st" = 0 ] || grep -A12 'ERROR SUMMARY\|definitely lost\|Invalid' "$tmp/valgrind.log" | head -n 40 | sed 's/^/# /'
done_testing
