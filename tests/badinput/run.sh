#!/bin/sh
# tests/badinput/run.sh: the bad-input catalogue's one runner. Every file in
# tests/badinput/cases/ is one hostile input for one boundary:
#
#   # what the case is (comment lines start with #)
#   kind: api | http | zmq | safetensors | tokenizer | dataset | cli
#   request: POST /jobs        (api: the route below /api/v1; the input is the body)
#   run: modula-engine ...     (cli: the command line, program names from the build)
#   status: 400                (api/http: the HTTP status; else the exit status;
#                               alternatives with '|', an empty one for "no answer")
#   expect: substring          (must appear in the answer / stderr; may repeat)
#   pad: 4000000               (append that many 'x' bytes to the input)
#   ---
#   the input, byte for byte, up to the end of the file
#
# kinds: api = a JSON body sent with an operator token; http = a raw request
# (@HOST@ and @TOKEN@ replaced) sent over a plain socket; zmq = ZeroMQ frames,
# one per line, sent to the broker by badinput-zsend; safetensors = a
# model.safetensors next to a good config.json, read by `modula-engine
# logits`; tokenizer = a tokenizer.json used by `modula-engine tokenize`;
# dataset = the train.jsonl of a one-step `modula-engine train` job of the
# tiny random model (bytes tokenizer, or the file of a "tokenizer:" line,
# @SRC@ being the source tree); cli = a command line.
#
# One modulad serves the api/http/zmq cases over a registry seeded with jobs,
# a model, a dataset and an artifact. After every case: the daemon still
# answers, and the registry (every table but the clocks of events, workers
# and tokens) and the artifact files are byte-identical to before.
. "$top_srcdir/tests/lib.sh"

B=$top_builddir
MODULAD=$B/daemon/modulad
ENGINE=$B/worker/modula-engine
ZSEND=$B/tests/badinput/badinput-zsend
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-badinput.XXXXXX")
data=$tmp/data
db=$data/registry.db
daemon_pid=""
cleanup() {
	[ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
http_port=$(free_port)
endpoint="tcp://127.0.0.1:$(free_port)"
api="http://127.0.0.1:$http_port/api/v1"

# The registry's contents that no refused input may change.
snapshot() {
	sqlite3 -cmd '.timeout 10000' "$db" \
		"SELECT 'artifacts', * FROM artifacts; SELECT 'base_models', * FROM base_models;
		 SELECT 'datasets', * FROM datasets; SELECT 'experiments', * FROM experiments;
		 SELECT 'runs', * FROM runs; SELECT 'jobs', * FROM jobs; SELECT 'deps', * FROM job_deps;
		 SELECT 'outputs', * FROM job_outputs; SELECT 'experts', * FROM experts;
		 SELECT 'routers', * FROM routers; SELECT 'metrics', * FROM metrics;
		 SELECT 'evaluations', * FROM evaluations; SELECT 'tokens', id, hash, role, note FROM api_tokens;"
	(cd "$data" && find artifacts -type f | sort | xargs -r sha256sum)
}

# field NAME FILE: the values of header lines "NAME: value", one a line.
field() { sed -n '/^---$/q; s/^'"$1"': *//p' "$2"; }

# body FILE OUT: the input after the first "---" line, byte for byte.
# A header "pad: N" appends N bytes of 'x' to the input, so that huge inputs
# are made here instead of being stored in the repository.
body() {
	off=$(grep -abm1 -x -- '---' "$1" | cut -d: -f1)
	tail -c +$((off + 5)) "$1" >"$2"
	pad=$(field pad "$1")
	[ -z "$pad" ] || head -c "$pad" /dev/zero | tr '\0' x >>"$2"
}

# --- the daemon, its tokens and the seeded registry -------------------------
mkdir -p "$data"
op=$("$MODULAD" token create --data "$data" --role operator --note badinput)
wk=$("$MODULAD" token create --data "$data" --role worker --note badinput-worker)
"$MODULAD" --data "$data" --http "127.0.0.1:$http_port" --broker "$endpoint" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
n=0
until curl -sf "$api/health" >/dev/null 2>&1 || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
curl -sf "$api/health" >/dev/null
check "modulad serves on 127.0.0.1:$http_port" $?
post() { curl -s -o "$tmp/out" -w '%{http_code}' -H "Authorization: Bearer $op" -H 'Content-Type: application/json' \
	-X "$1" --data-binary "@$3" "$api$2"; }
printf '%s' '{"jobs":[{"kind":"noop","name":"a"},{"kind":"sleep","spec":{"ms":1},"deps":["a"]}]}' >"$tmp/seed.json"
printf 'seed artifact\n' >"$tmp/artifact"
sha=$(sha256sum "$tmp/artifact" | cut -d' ' -f1)
seeded=$(post POST /jobs "$tmp/seed.json")
seeded="$seeded $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $wk" -X PUT \
	--data-binary "@$tmp/artifact" "$api/artifacts/$sha?kind=dataset")"
check "the registry is seeded with jobs and an artifact ($seeded)" $([ "$seeded" = "201 201" ] || [ "$seeded" = "200 201" ]; echo $?)
snapshot >"$tmp/before"

# --- the engine's fixtures ----------------------------------------------------
mkdir -p "$tmp/model"
cat >"$tmp/model/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":259,"hidden_size":16,
 "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"intermediate_size":32,
 "max_position_embeddings":64,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true,
 "hidden_act":"silu"}
JSON

# run_case FILE: prints "STATUS" on the first line of $tmp/ans, the answer after.
run_case() {
	f=$1 kind=$(field kind "$1") in=$tmp/input
	body "$f" "$in"
	case $kind in
	api)
		set -- $(field request "$f")
		post "$1" "$2" "$in" >"$tmp/status"
		cat "$tmp/out" >>"$tmp/ans" ;;
	http)
		sed "s/@HOST@/127.0.0.1:$http_port/g; s/@TOKEN@/$op/g" "$in" >"$tmp/raw"
		python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
try:
    s.sendall(open(sys.argv[2], "rb").read())
    s.shutdown(socket.SHUT_WR)
except OSError:
    pass  # the server may answer and close before it has read everything
out = b""
while True:
    try:
        b = s.recv(65536)
    except OSError:
        break
    if not b:
        break
    out += b
sys.stdout.write(out.decode("latin-1"))' "$http_port" "$tmp/raw" >"$tmp/out" 2>&1
		sed -n '1s/^HTTP\/1\.[01] \([0-9]*\).*/\1/p' "$tmp/out" >"$tmp/status"
		cat "$tmp/out" >>"$tmp/ans" ;;
	zmq)
		"$ZSEND" "$endpoint" "$in" >>"$tmp/ans" 2>&1
		echo $? >"$tmp/status" ;;
	safetensors)
		rm -f "$tmp/model/model.safetensors"
		cp "$in" "$tmp/model/model.safetensors"
		"$ENGINE" logits --model "$tmp/model" --tokens 1,2 --out "$tmp/logits" >>"$tmp/ans" 2>&1
		echo $? >"$tmp/status" ;;
	tokenizer)
		cp "$in" "$tmp/tokenizer.json"
		echo '"hello world"' | "$ENGINE" tokenize --tokenizer "$tmp/tokenizer.json" >>"$tmp/ans" 2>&1
		echo $? >"$tmp/status" ;;
	dataset)
		rm -rf "$tmp/train"
		mkdir -p "$tmp/train"
		cp "$in" "$tmp/train/train.jsonl"
		tok=$(field tokenizer "$f" | sed "s|@SRC@|$top_srcdir|")
		printf '{"model":"random","model_config":{"vocab_size":300,"dim":16,"n_layers":1,"n_heads":2,"n_kv_heads":1,
			"ffn_dim":32,"max_seq":32},"tokenizer":"%s","data":"train.jsonl","steps":1,"batch":2,"seq_len":16,
			"out_dir":"out"}' "${tok:-bytes}" >"$tmp/train/job.json"
		"$ENGINE" train "$tmp/train/job.json" >>"$tmp/ans" 2>&1
		echo $? >"$tmp/status" ;;
	cli)
		cmd=$(field run "$f" | sed "s|modulad|$MODULAD|; s|modula-worker|$B/worker/modula-worker|;
			s|modula-engine|$ENGINE|; s|^modula |$B/cli/modula |; s|@TMP@|$tmp|g")
		sh -c "$cmd" <"$in" >>"$tmp/ans" 2>&1
		echo $? >"$tmp/status" ;;
	*)
		echo "unknown kind '$kind'" >>"$tmp/ans"
		echo none >"$tmp/status" ;;
	esac
}

ncases=0
for f in "$top_srcdir"/tests/badinput/cases/*; do
	name=${f##*/}
	ncases=$((ncases + 1))
	: >"$tmp/ans"
	run_case "$f"
	kind=$(field kind "$f") got=$(cat "$tmp/status") want=$(field status "$f") bad=""
	case "|$want|" in *"|$got|"*) : ;; *) bad="status $got, expected $want" ;; esac
	field expect "$f" >"$tmp/expect"
	while IFS= read -r e; do
		grep -qF -- "$e" "$tmp/ans" || bad="$bad; no '$e' in the answer"
	done <"$tmp/expect"
	# No crash: a program killed by a signal exits over 128; ASan reports.
	case $kind in api|http) ;; *) [ "${got:-0}" -lt 128 ] 2>/dev/null || bad="$bad; killed by a signal" ;; esac
	grep -q 'AddressSanitizer\|runtime error:' "$tmp/ans" && bad="$bad; a sanitizer report"
	check "$name ($kind): $(sed -n 's/^# *//p; /^[a-z]*:/q' "$f" | head -n 1)" $([ -z "$bad" ]; echo $?)
	if [ -n "$bad" ]; then
		diag "$bad"
		head -c 600 "$tmp/ans" | sed 's/^/# /'
		echo
	fi
	case $kind in api|http|zmq)
		snapshot >"$tmp/after"
		curl -sf "$api/health" >/dev/null && cmp -s "$tmp/before" "$tmp/after"
		st=$?
		check "$name: modulad still serves, the registry and artifacts are unchanged" $st
		if [ $st -ne 0 ]; then # report once, then compare the next case with this state
			diff "$tmp/before" "$tmp/after" | head -n 10 | sed 's/^/# /'
			mv "$tmp/after" "$tmp/before"
		fi ;;
	esac
done
diag "$ncases cases"
kill -0 "$daemon_pid" 2>/dev/null
check "modulad is alive after the whole catalogue" $?
done_testing
