#!/bin/sh
# daemon/http.sh: the HTTP API of a real modulad on 127.0.0.1 (a free port
# chosen by the kernel): health, submit, lists and paging, auth refusals,
# artifacts, and a catalogue of bad input, each answered with a clear JSON
# error while the daemon keeps serving; then a restart keeps every job.
. "$top_srcdir/tests/lib.sh"
modulad="$top_builddir/daemon/modulad"
tmp=$(mktemp -d /tmp/modula-http-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

start() {
	: > "$tmp/log"
	"$modulad" --data "$tmp/data" --http 127.0.0.1:0 --broker 'tcp://127.0.0.1:*' \
		--web "$tmp/web" --log "$tmp/log" &
	pid=$!
	port=
	for _ in $(seq 1 100); do
		port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/log" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.1
	done
	base="http://127.0.0.1:$port"
}

# req METHOD PATH [curl args...]: body in $tmp/out, status in $code
req() {
	m=$1; p=$2; shift 2
	code=$(curl -s --path-as-is -o "$tmp/out" -w '%{http_code}' -X "$m" "$@" "$base$p")
	body=$(cat "$tmp/out")
}
# expect "what" STATUS [substring of the body]
expect() {
	what=$1; want=$2; sub=$3
	st=0
	[ "$code" = "$want" ] || st=1
	[ -z "$sub" ] || case "$body" in *"$sub"*) : ;; *) st=1 ;; esac
	[ $st -eq 0 ] || diag "got $code: $body"
	check "$what ($want)" $st
}
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$tmp/out" | head -1; }

mkdir -p "$tmp/web"
echo '<h1>modula</h1>' > "$tmp/web/index.html"
start
check "daemon started on a free port ($port)" $([ -n "$port" ]; echo $?)

req GET /api/v1/health
expect "health" 200 '"status":"ok"'

OP=$("$modulad" token create --data "$tmp/data" --role operator)
VIEW=$("$modulad" token create --data "$tmp/data" --role viewer)
check "token create prints a 64-hex token" $(echo "$OP" | grep -qE '^[0-9a-f]{64}$'; echo $?)
check "the registry never holds the token itself" $(cat "$tmp/data"/registry.db* | grep -q "$OP"; [ $? -ne 0 ]; echo $?)
A="Authorization: Bearer $OP"

# --- auth ---
req POST /api/v1/jobs -d '{"kind":"noop"}'
expect "submit without a token is refused" 401 'operator token'
req POST /api/v1/jobs -H "Authorization: Bearer $VIEW" -d '{"kind":"noop"}'
expect "submit with a viewer token is refused" 403 'viewer'
req POST /api/v1/jobs -H "Authorization: Bearer 0000000000000000000000000000000000000000000000000000000000000000" -d '{"kind":"noop"}'
expect "an unknown token is refused" 401 'unknown token'
req GET /api/v1/jobs
expect "reads are open on loopback" 200 '"items"'

# --- submit, show, lists ---
req POST /api/v1/jobs -H "$A" -d '{"kind":"noop","priority":3,"spec":{"n":1}}'
expect "submit one job" 201 '"ids":[1]'
req POST /api/v1/jobs -H "$A" -d '{"jobs":[{"kind":"train","name":"u"},{"kind":"train","name":"d","deps":["u"]},{"kind":"eval","deps":["d",1]}]}'
expect "submit a batch with deps by name and id" 201 '"ids":[2,3,4]'
req GET /api/v1/jobs/4
expect "show a job with its deps" 200 '"deps":[{"id":1,"state":"ready"},{"id":3,"state":"pending"}]'
req GET '/api/v1/jobs?state=pending'
expect "filter by state" 200 '"id":3'
req GET '/api/v1/jobs?limit=2'
expect "first page" 200 '"next":2'
req GET '/api/v1/jobs?limit=2&after=2'
expect "second page" 200 '"next":4'
req GET '/api/v1/jobs?limit=2&after=4'
expect "last page" 200 '"next":null,"items":[]'
req GET '/api/v1/jobs?order=desc&limit=1'
expect "newest first" 200 '"id":4'
req GET /api/v1/jobs/99
expect "unknown job" 404 'no job 99'

# --- bad input catalogue ---
req POST /api/v1/jobs -H "$A" -d '{"kind":'
expect "bad JSON" 400 'bad JSON'
req POST /api/v1/jobs -H "$A" -d '{"kind":"noop","colour":"red"}'
expect "unknown field" 400 "unknown field 'colour'"
req POST /api/v1/jobs -H "$A" -d '{"kind":"noop","priority":"high"}'
expect "wrong type" 400 "'priority': expected an integer"
req POST /api/v1/jobs -H "$A" -d '{"kind":"noop","deps":[999]}'
expect "unknown dependency" 404 'no job 999'
req POST /api/v1/jobs -H "$A" -d '{"jobs":[{"kind":"noop"},{"kind":"noop","deps":["nope"]}]}'
expect "a bad job in a batch refuses the whole batch" 400 'nothing was submitted'
req POST /api/v1/jobs -H "$A" -d '{"kind":"../../x"}'
expect "bad kind" 400 'bad job kind'
req POST /api/v1/jobs -H "$A" -d '[1,2]'
expect "body not an object" 400 'expected an object'
head -c 9000000 /dev/zero | tr '\0' ' ' > "$tmp/big"
req POST /api/v1/jobs -H "$A" --data-binary @"$tmp/big"
expect "oversized body" 413 'larger than'
req GET '/api/v1/jobs?limit=abc'
expect "bad query value" 400 "'limit'"
req GET '/api/v1/jobs?colour=red'
expect "unknown query parameter" 400 "unknown query parameter 'colour'"
req GET /api/v1/nothing
expect "unknown endpoint" 404 'no such endpoint'
req DELETE /api/v1/jobs -H "$A"
expect "wrong method" 405 'not allowed'

# --- cancel, retry ---
req POST /api/v1/jobs/3/cancel -H "$A" -d '{"reason":"test"}'
expect "cancel a pending job" 200 '"state":"cancelled"'
req GET /api/v1/jobs/4
expect "its dependent is cancelled too" 200 '"state":"cancelled"'
req POST /api/v1/jobs/3/cancel -H "$A"
expect "cancel twice" 409 'already ended'
req POST /api/v1/jobs/4/retry -H "$A"
expect "retry a job whose dep is cancelled" 409 'retry that one first'
req POST /api/v1/jobs/3/retry -H "$A"
expect "retry the cancelled job" 200 '"state":"pending"'
req POST /api/v1/jobs/3/cancel
expect "cancel without a token" 401

# --- artifacts ---
printf 'hello artifact' > "$tmp/a"
sha=$(sha256sum "$tmp/a" | cut -d' ' -f1)
req PUT "/api/v1/artifacts/$sha?kind=expert" -H "$A" --data-binary @"$tmp/a"
expect "upload an artifact" 201 "\"sha256\":\"$sha\""
req GET "/api/v1/artifacts/$sha"
check "download gives the same bytes" $(cmp -s "$tmp/out" "$tmp/a"; echo $?)
req PUT "/api/v1/artifacts/0000000000000000000000000000000000000000000000000000000000000000" -H "$A" --data-binary @"$tmp/a"
expect "upload with a wrong hash" 400 'does not match'
req PUT "/api/v1/artifacts/../../../etc/passwd" -H "$A" --data-binary @"$tmp/a"
expect "path traversal in an artifact name" 400 'bad artifact name'
req GET "/api/v1/artifacts/..%2f..%2fregistry.db"
expect "encoded traversal in a download" 400 'bad artifact name'
req PUT "/api/v1/artifacts/$sha" --data-binary @"$tmp/a"
expect "upload without a token" 401
req GET "/api/v1/artifacts/1111111111111111111111111111111111111111111111111111111111111111"
expect "download of a missing artifact" 404
req GET '/api/v1/artifacts?kind=expert'
expect "list artifacts" 200 "$sha"
req POST /api/v1/artifacts/gc -H "$A" -d '{"min_age_s":3967805190288499596}'
expect "gc with an age past 100 years is refused (no overflow)" 400 "it must be between 0 and 3162240000 (100 years)"
req POST /api/v1/artifacts/gc -H "$A" -d '{"min_age_s":-1}'
expect "gc with a negative age is refused" 400 "must be between 0 and"
req POST /api/v1/artifacts/gc -H "$A" -d '{"min_age_s":0}'
expect "gc removes the unreferenced artifact" 200 '"removed":1'

# --- experiments, runs, registry, metrics ---
req POST /api/v1/experiments -H "$A" -d '{"name":"sweep","spec":{"seeds":2},"runs":[{"method":"modula","seed":1},{"method":"lora","seed":1,"params":{"r":8}}]}'
expect "create an experiment with runs" 201 '"runs":[1,2]'
req GET '/api/v1/runs?experiment=1&method=lora'
expect "runs filtered" 200 '"params":{"r":8}'
req GET /api/v1/experiments/1
expect "show an experiment" 200 '"name":"sweep"'
req POST /api/v1/models -H "$A" -d '{"name":"tiny","config":{"layers":2}}'
expect "register a base model" 201 '"id":1'
req POST /api/v1/models -H "$A" -d '{"name":"tiny"}'
expect "the same model name twice" 409 'already exists'
req POST /api/v1/datasets -H "$A" -d '{"name":"flan","domain":"flan","artifact":"2222222222222222222222222222222222222222222222222222222222222222"}'
expect "a dataset naming a missing artifact" 400 'upload it first'
req POST /api/v1/datasets -H "$A" -d '{"name":"flan","domain":"flan","rows":"many"}'
expect "a dataset with a wrong type" 400 "'rows': expected an integer"
req POST /api/v1/datasets -H "$A" -d '{"name":"flan","domain":"flan","rows":1000}'
expect "register a dataset" 201 '"id":1'
req GET '/api/v1/models?name=tiny'
expect "list models" 200 '"config":{"layers":2}'
for p in models datasets experts routers evaluations events workers; do
	req GET /api/v1/$p
	expect "list $p" 200 '"items"'
done
req GET /api/v1/jobs/1/metrics
expect "metric keys of a job" 200 '"keys":[]'
req GET '/api/v1/jobs/1/metrics?key=loss'
expect "metric series of a job" 200 '"points":[]'
req GET /metrics
expect "prometheus metrics" 200 'modula_jobs{state="ready"}'
req GET /
expect "static index" 200 'modula'
req GET /../../etc/passwd
expect "static traversal refused" 400 'unsafe path'

req GET /api/v1/health
expect "still serving after all that" 200 '"status":"ok"'

# --- restart ---
kill -TERM "$pid"; wait "$pid"; st=$?; pid=
check "SIGTERM stops it cleanly (exit $st)" $st
start
req GET '/api/v1/jobs?limit=1000'
n=$(grep -o '"kind"' "$tmp/out" | wc -l)
check "after a restart all 4 jobs are there ($n)" $([ "$n" -eq 4 ]; echo $?)
req POST /api/v1/jobs -H "$A" -d '{"kind":"noop"}'
expect "the operator token still works after a restart" 201 '"ids":[5]'
done_testing
