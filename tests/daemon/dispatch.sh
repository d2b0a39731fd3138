#!/bin/sh
# daemon/dispatch.sh: modulad put together: jobs submitted over HTTP run on
# real modula-worker processes through the broker (over ipc:// in a
# temporary folder, HTTP on a free 127.0.0.1 port): a DAG runs in order, a
# content-key twin is served from the cache, cancelling a running sleep job
# stops it on its worker, /metrics and /workers reflect it all.
. "$top_srcdir/tests/lib.sh"
modulad="$top_builddir/daemon/modulad"
worker="$top_builddir/worker/modula-worker"
tmp=$(mktemp -d /tmp/modula-dispatch-XXXXXX)
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$modulad" --data "$tmp/data" --http 127.0.0.1:0 --broker "ipc://$tmp/broker" --log "$tmp/log" &
dpid=$!
pids="$dpid"
for _ in $(seq 1 100); do
	port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/log" 2>/dev/null)
	[ -n "$port" ] && break
	sleep 0.1
done
base="http://127.0.0.1:$port/api/v1"
for i in 1 2; do
	"$worker" --broker "ipc://$tmp/broker" --slots 2 --device cpu --id "w$i" --work "$tmp/w$i" 2>"$tmp/w$i.log" &
	pids="$pids $!"
done
OP=$("$modulad" token create --data "$tmp/data" --role operator)
post() { curl -s -X POST -H "Authorization: Bearer $OP" "$base$1" -d "$2"; }
state() { curl -s "$base/jobs/$1" | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p' | tail -1; }
# wait_for JOB STATE: up to 30 s
wait_for() {
	for _ in $(seq 1 300); do
		[ "$(state "$1")" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

key=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
out=$(post /jobs '{"jobs":[{"kind":"noop","name":"u","content_key":"'$key'"},{"kind":"sleep","name":"d","deps":["u"],"spec":{"seconds":0.2}},{"kind":"noop","deps":["d"]}]}')
check "submit a three-job chain: $out" $(echo "$out" | grep -q '"ids":\[1,2,3\]'; echo $?)
ok "the chain's last job succeeds" wait_for 3 succeeded
f1=$(curl -s "$base/jobs/1" | sed -n 's/.*"finished_ms":\([0-9]*\).*/\1/p')
l2=$(curl -s "$base/jobs/2" | sed -n 's/.*"leased_ms":\([0-9]*\).*/\1/p')
f2=$(curl -s "$base/jobs/2" | sed -n 's/.*"finished_ms":\([0-9]*\).*/\1/p')
l3=$(curl -s "$base/jobs/3" | sed -n 's/.*"leased_ms":\([0-9]*\).*/\1/p')
check "each job was leased only after its dependency finished" $([ "$l2" -ge "$f1" ] && [ "$l3" -ge "$f2" ]; echo $?)

out=$(post /jobs '{"kind":"noop","content_key":"'$key'"}')
check "a twin of a finished content key is served from the cache: $out" $(echo "$out" | grep -q '"cached":\[true\]'; echo $?)
check "the twin names its source" $(curl -s "$base/jobs/4" | grep -q '"cached_from":1'; echo $?)

out=$(post /jobs '{"kind":"sleep","spec":{"seconds":60}}')
ok "a long sleep job starts running" wait_for 5 running
post /jobs/5/cancel '{"reason":"test"}' >/dev/null
ok "cancelled" wait_for 5 cancelled
stopped=1
for _ in $(seq 1 100); do
	grep -q 'job 5/1: cancel' "$tmp"/w*.log && { stopped=0; break; }
	sleep 0.1
done
check "its worker was told to stop it" $stopped

out=$(post /jobs "{\"jobs\":[$(for i in $(seq 1 100); do printf '{"kind":"noop"}'; [ $i -lt 100 ] && printf ,; done)]}")
ok "100 noop jobs succeed" wait_for 105 succeeded
n=0
for _ in $(seq 1 100); do
	n=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^modula_jobs{state="succeeded"} //p')
	[ "$n" = 104 ] && break
	sleep 0.1
done
check "/metrics counts 104 succeeded ($n)" $([ "$n" = 104 ]; echo $?)
check "every job ran at most once (attempts <= 1)" $(curl -s "$base/jobs?limit=1000" | grep -q '"attempts":[2-9]'; [ $? -ne 0 ]; echo $?)
check "two workers are up" $([ "$(curl -s "$base/workers" | grep -o '"state":"up"' | wc -l)" -eq 2 ]; echo $?)

kill -TERM "$dpid"; wait "$dpid"; st=$?
pids=${pids#"$dpid"}
check "modulad stops cleanly with workers attached (exit $st)" $st
done_testing
