#!/bin/sh
# tests/multihost/netns.sh: modula across three hosts on this machine.
#
# Network namespaces make the hosts: D runs modulad (HTTP and the broker
# bound to 10.77.1.1, not loopback), A (10.77.1.2) and B (10.77.2.2) each run
# a modula-worker over TCP with CURVE (keys made here, an allow-list).
# Everything talks over veth pairs between these namespaces only: the
# addresses exist nowhere else, and nothing leaves them.
#
# Checks: the access rules off loopback (reads need a viewer token), a
# sweep of real `modula-engine train` jobs (tiny random model) whose shared
# input dataset is pulled over HTTP once per worker host (the cache) and
# whose outputs are pushed back; then a longer job is cut off mid-run (its
# host's link goes down): the broker requeues it and the other host
# resumes it from the checkpoint uploaded before the cut. On a link slowed
# with tc (tbf), an input that takes longer than the liveness period to
# download does not cost the worker its job (heartbeats go on).
#
# Needs root and `ip netns` (CI runs as root): when they are refused the
# test fails loudly; it never skips. Not here: the single-host e2e tests
# (tests/e2e/), a real cluster.
. "$top_srcdir/tests/lib.sh"

WORKER="$top_builddir/worker/modula-worker"
MODULAD="$top_builddir/daemon/modulad"
ENGINE="$top_builddir/worker/modula-engine"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-netns.XXXXXX")
db="$tmp/data/registry.db"
tag="mh$$$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
nsd="$tag-d" nsa="$tag-a" nsb="$tag-b"
pids=""
made=""

cleanup() {
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	for ns in $made; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

bail() {
	echo "Bail out! $*"
	exit 1
}

sql() { sqlite3 -cmd '.timeout 10000' "$db" "$1"; }

# wait_for "SQL" VALUE [TRIES]: poll (every 0.2 s) until the query prints VALUE.
wait_for() {
	n=${3:-300}
	while [ "$n" -gt 0 ]; do
		[ "$(sql "$1" 2>/dev/null)" = "$2" ] && return 0
		sleep 0.2
		n=$((n - 1))
	done
	diag "timed out waiting for '$1' = '$2' (got '$(sql "$1" 2>&1)')"
	return 1
}

show_logs() {
	for f in "$tmp"/*.log; do diag "--- $f"; grep -v "cannot ask how much" "$f" | tail -n 40 | sed 's/^/# /'; done
}

# on NS CMD...: run CMD on host NS.
on() { ns=$1; shift; ip netns exec "$ns" "$@"; }

# ---- the hosts -----------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || bail "the multi-host test needs root for ip netns (CI runs as root)"
command -v ip >/dev/null || bail "no 'ip' command (install iproute2)"
for ns in "$nsd" "$nsa" "$nsb"; do
	ip netns add "$ns" || bail "'ip netns add $ns' was refused: this test needs network namespaces"
	made="$made $ns"
	ip -n "$ns" link set lo up || bail "cannot bring up lo in $ns"
done
# D:va <-> A:eth0 on 10.77.1.0/24, D:vb <-> B:eth0 on 10.77.2.0/24.
ip -n "$nsd" link add va type veth peer name eth0 netns "$nsa" &&
	ip -n "$nsd" link add vb type veth peer name eth0 netns "$nsb" &&
	ip -n "$nsd" addr add 10.77.1.1/24 dev va && ip -n "$nsd" addr add 10.77.2.1/24 dev vb &&
	ip -n "$nsa" addr add 10.77.1.2/24 dev eth0 && ip -n "$nsb" addr add 10.77.2.2/24 dev eth0 &&
	ip -n "$nsd" link set va up && ip -n "$nsd" link set vb up &&
	ip -n "$nsa" link set eth0 up && ip -n "$nsb" link set eth0 up &&
	ip -n "$nsb" route add 10.77.1.0/24 via 10.77.2.1 ||
	bail "cannot wire the namespaces with veth pairs"
ip -n "$nsb" route get 10.77.1.1 >/dev/null
check "host B has a route to the daemon host's 10.77.1.1" $?
ip -n "$nsa" route get 10.77.2.2 >/dev/null 2>&1
check "host A has none to host B (separate links)" $([ $? -ne 0 ]; echo $?)

# ---- keys, tokens, the daemon ---------------------------------------------------------------
http="10.77.1.1:8600"
api="http://$http/api/v1"
broker="tcp://10.77.1.1:8601"
mkdir -p "$tmp/data" "$tmp/keys" && chmod 700 "$tmp/keys"
"$MODULAD" keygen "$tmp/keys/broker" >/dev/null &&
	"$WORKER" keygen "$tmp/keys/wa" >/dev/null && "$WORKER" keygen "$tmp/keys/wb" >/dev/null &&
	cat "$tmp/keys/wa.pub" "$tmp/keys/wb.pub" >"$tmp/data/workers.allow"
check "the test makes CURVE keys and the allow-list" $?
op=$("$MODULAD" token create --data "$tmp/data" --role operator --note netns 2>>"$tmp/tokens.log")
viewer=$("$MODULAD" token create --data "$tmp/data" --role viewer --note netns 2>>"$tmp/tokens.log")
check "operator and viewer tokens" $([ -n "$op" ] && [ -n "$viewer" ]; echo $?)

ip netns exec "$nsd" "$MODULAD" --data "$tmp/data" --http "$http" --broker "$broker" \
	--curve-secret "$tmp/keys/broker.key" --curve-allow "$tmp/data/workers.allow" \
	>>"$tmp/daemon.log" 2>&1 &
pids="$pids $!" daemon_pid=$!
n=100
until on "$nsa" curl -s -o /dev/null -H "Authorization: Bearer $viewer" "$api/health"; do
	n=$((n - 1))
	[ "$n" -gt 0 ] || { show_logs; bail "modulad did not answer on $http"; }
	sleep 0.2
done

code=$(on "$nsa" curl -s -o /dev/null -w '%{http_code}' "$api/jobs")
check "from host A, a read without a token is refused off loopback ($code)" $([ "$code" = 401 ]; echo $?)
code=$(on "$nsa" curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $viewer" "$api/jobs")
check "with a viewer token it is allowed ($code)" $([ "$code" = 200 ]; echo $?)

# ---- the input dataset, uploaded from host B -------------------------------------------------
i=0
while [ $i -lt 64 ]; do
	echo "{\"prompt\": \"add $i and $((i + 1)): \", \"response\": \"$((2 * i + 1))\"}"
	i=$((i + 1))
done >"$tmp/train.jsonl"
data=$(sha256sum "$tmp/train.jsonl" | cut -c1-64)
code=$(on "$nsb" curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $viewer" \
	--data-binary @"$tmp/train.jsonl" "$api/artifacts/$data?kind=dataset")
check "a viewer token may not upload ($code)" $([ "$code" = 403 ]; echo $?)
code=$(on "$nsb" curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $op" \
	--data-binary @"$tmp/train.jsonl" "$api/artifacts/$data?kind=dataset")
check "the dataset is uploaded from host B ($code)" $([ "$code" = 201 ]; echo $?)

# ---- the workers -----------------------------------------------------------------------------
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
for w in a b; do
	eval "ns=\$ns$w"
	ip netns exec "$ns" "$WORKER" --broker "$broker" --id "w$w" --device cpu --work "$tmp/w$w" \
		--engine "$ENGINE" --curve-server-key "$tmp/keys/broker.pub" \
		--curve-keys "$tmp/keys/w$w.key" >>"$tmp/w$w.log" 2>&1 &
	pids="$pids $!"
done
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 2
check "both worker hosts are up over TCP with CURVE" $?

# train_job SEED STEPS CHECKPOINT_EVERY: the JSON of one tiny train job.
train_job() {
	printf '{"kind": "train", "max_attempts": 3, "spec": {"model": "random", '
	printf '"model_config": {"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 64, "max_seq": 64}, '
	printf '"tokenizer": "bytes", "data": ["data/train.jsonl"], "inputs": {"data/train.jsonl": "%s"}, ' "$data"
	printf '"mode": "lora", "lora": {"rank": 4}, "steps": %d, "batch": 4, "seq_len": 32, ' "$2"
	printf '"lr": 0.001, "seed": %d, "checkpoint_every": %d, "out_dir": "run"}}' "$1" "$3"
}
submit() {
	on "$nsa" curl -s -f -X POST -H "Authorization: Bearer $op" -H 'Content-Type: application/json' \
		--data-binary "$1" "$api/jobs" >>"$tmp/submit.log"
}

# ---- a sweep: 4 jobs sharing one input -----------------------------------------------------------
submit "{\"jobs\": [$(train_job 1 12 0), $(train_job 2 12 0), $(train_job 3 12 0), $(train_job 4 12 0)]}"
check "a sweep of 4 train jobs is submitted from host A" $?
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 4 900
check "the sweep completes" $?
hosts=$(sql "SELECT count(DISTINCT worker) FROM jobs WHERE state = 'succeeded'")
pulls=$(cat "$tmp/wa.log" "$tmp/wb.log" | grep -c "downloaded artifact $data")
diag "sweep: ran on $hosts host(s); the input was downloaded $pulls time(s) for 4 jobs"
check "the shared input was pulled once per worker host, not per job ($pulls)" \
	$([ "$pulls" = "$hosts" ]; echo $?)
outs=$(sql "SELECT count(*) FROM job_outputs WHERE job_id <= 4")
check "every job pushed its outputs ($outs)" $([ "$outs" -ge 4 ]; echo $?)
out=$(sql "SELECT sha256 FROM job_outputs WHERE job_id = 1 LIMIT 1")
got=$(on "$nsb" curl -s -f -H "Authorization: Bearer $viewer" "$api/artifacts/$out" | sha256sum | cut -c1-64)
check "an output reads back from host B with its sha256" $([ -n "$out" ] && [ "$got" = "$out" ]; echo $?)

# ---- a slow link: a download that outlasts the liveness period (3 s) ------------------------------
# 400 KB through 320 kbit/s from the daemon host: about 10 s in which the
# worker must keep heartbeating or the broker would take its job away.
head -c 400000 /dev/urandom >"$tmp/blob.bin"
blob=$(sha256sum "$tmp/blob.bin" | cut -c1-64)
on "$nsb" curl -s -f -o /dev/null -X PUT -H "Authorization: Bearer $op" \
	--data-binary @"$tmp/blob.bin" "$api/artifacts/$blob?kind=blob"
check "a 400 KB input is uploaded" $?
for l in va vb; do
	tc -n "$nsd" qdisc add dev "$l" root tbf rate 320kbit burst 16kbit latency 1s || bail "tc refused"
done
submit "{\"jobs\": [$(train_job 5 12 0 | sed "s|\"inputs\": {|&\"blob.bin\": \"$blob\", |")]}"
wait_for "SELECT state FROM jobs WHERE id = 5" succeeded 1500
check "a job whose input crawls over a slow link succeeds" $?
# Deleting a tbf qdisc drops what it holds; a dropped segment costs the
# worker's connection a retransmission timeout grown on the slow link
# (seconds, doubling): longer than the liveness period, so the next part
# would start with a worker the broker has just declared lost. Empty
# queues first.
for l in va vb; do
	n=100
	until tc -s -n "$nsd" qdisc show dev "$l" root | grep -q "backlog 0b 0p"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || break
		sleep 0.1
	done
	tc -n "$nsd" qdisc del dev "$l" root
done
took=$(sql "SELECT started_ms - leased_ms FROM jobs WHERE id = 5")
diag "the job waited $took ms for its input before the engine started"
check "the download outlasted the liveness period (${took} ms > 3000)" $([ "${took:-0}" -gt 3000 ]; echo $?)
att=$(sql "SELECT attempts FROM jobs WHERE id = 5")
check "on its first attempt ($att): the broker did not lose the worker" $([ "$att" = 1 ]; echo $?)
lost=$(grep -c "job(s) requeued" "$tmp/daemon.log")
check "no worker was declared lost ($lost)" $([ "$lost" = 0 ]; echo $?)

# ---- cut one host off mid-job ----------------------------------------------------------------------
# Start from a quiet network: both workers up and none declared lost for
# 5 s (up to 2 minutes). Under the sanitizers a connection that crawled
# through the slow link may still stall for a while after it (a worker
# then goes silent and comes back with READY); a job started in that
# window would be requeued before the cut this part is about.
quiet=0 n=600 silent=$(grep -c "went silent" "$tmp/daemon.log")
while [ "$quiet" -lt 25 ] && [ "$n" -gt 0 ]; do
	sleep 0.2
	n=$((n - 1)) quiet=$((quiet + 1))
	now=$(grep -c "went silent" "$tmp/daemon.log")
	[ "$now" = "$silent" ] && [ "$(sql "SELECT count(*) FROM workers WHERE state = 'up'")" = 2 ] ||
		quiet=0 silent=$now
done
[ "$quiet" -ge 25 ] || diag "the workers did not stay up together for 5 s before the cut"
diag "before the cut: $(grep -c "went silent" "$tmp/daemon.log") time(s) a worker went silent"
submit "{\"jobs\": [$(train_job 9 8000 250)]}"
check "a longer job is submitted" $?
wait_for "SELECT checkpoint IS NOT NULL AND state = 'running' FROM jobs WHERE id = 6" 1 900
check "it runs and has uploaded a checkpoint" $?
victim=$(sql "SELECT worker FROM jobs WHERE id = 6")
case $victim in wa) link=va other=wb ;; *) link=vb other=wa ;; esac
ip -n "$nsd" link set "$link" down
check "host $victim is cut off (link $link down)" $?
wait_for "SELECT state = 'succeeded' AND worker = '$other' FROM jobs WHERE id = 6" 1 1500
rc=$?
check "its job was requeued and finished on the other host ($other)" $rc
[ $rc = 0 ] || { sql "SELECT id, state, worker, attempts, error FROM jobs WHERE id = 6" | sed 's/^/# job: /'
	  sql "SELECT t_ms, kind, actor, detail FROM events WHERE job_id = 6" | sed 's/^/# event: /'
	  sql "SELECT id, state, last_seen FROM workers" | sed 's/^/# worker: /'
	  ! command -v gdb >/dev/null ||
		gdb -p "$daemon_pid" -batch -ex "thread apply all bt 12" 2>/dev/null |
		grep -E "^Thread|^#" | sed 's/^/# modulad: /'; }
att=$(sql "SELECT attempts FROM jobs WHERE id = 6")
check "on a second attempt ($att)" $([ "$att" -ge 2 ]; echo $?)
[ -f "$tmp/$other/job-6/checkpoints/step-00000000-resume.safetensors" ]
check "it resumed from the checkpoint uploaded before the cut" $?
lost=$(sql "SELECT state FROM workers WHERE id = '$victim'")
check "the broker lost $victim ($lost)" $([ "$lost" != up ]; echo $?)

[ "$tap_failed" -eq 0 ] || show_logs
done_testing
