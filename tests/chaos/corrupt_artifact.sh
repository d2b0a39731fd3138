#!/bin/sh
# tests/chaos/corrupt_artifact.sh: a stored artifact damaged on disk after
# it was uploaded (one byte flipped, or cut short) is refused when it is
# downloaded, with a clear error, instead of served: modulad checks the
# file's SHA-256 against its name before it sends it (daemon/artifacts.c
# artifacts_verify). The refusal is logged and recorded once in the audit
# log (event artifact.corrupt); nothing else in the registry changes, other
# artifacts are still served, and uploading the right bytes again heals it.
. "$top_srcdir/tests/lib.sh"
modulad="$top_builddir/daemon/modulad"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-corrupt-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$modulad" --data "$tmp/data" --http 127.0.0.1:0 --broker 'tcp://127.0.0.1:*' --log "$tmp/log" &
pid=$!
port=
for _ in $(seq 1 100); do
	port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/log" 2>/dev/null)
	[ -n "$port" ] && break
	sleep 0.1
done
check "daemon started on a free port ($port)" $([ -n "$port" ]; echo $?)
base="http://127.0.0.1:$port/api/v1"
db="$tmp/data/registry.db"
OP=$("$modulad" token create --data "$tmp/data" --role operator)
A="Authorization: Bearer $OP"

# get SHA: the download into $tmp/out, the status in $code.
get() { code=$(curl -s -o "$tmp/out" -w '%{http_code}' "$base/artifacts/$1"); }
put() { curl -s -o /dev/null -w '%{http_code}' -H "$A" -T "$2" "$base/artifacts/$1?kind=model"; }
# the registry without its audit log, as text
snapshot() { sqlite3 "$db" .dump | grep -v '^INSERT INTO events' | grep -v '^INSERT INTO api_tokens'; }

head -c 3000000 /dev/urandom > "$tmp/model"
head -c 5000 /dev/urandom > "$tmp/data.bin"
m=$(sha256sum "$tmp/model" | cut -d' ' -f1)
d=$(sha256sum "$tmp/data.bin" | cut -d' ' -f1)
check "two artifacts uploaded" $([ "$(put "$m" "$tmp/model") $(put "$d" "$tmp/data.bin")" = "201 201" ]; echo $?)
curl -sf -H "$A" -d "{\"name\":\"tiny\",\"artifact\":\"$m\"}" "$base/models" > /dev/null
get "$m"
check "a sound artifact is served" $([ "$code" = 200 ] && cmp -s "$tmp/out" "$tmp/model"; echo $?)

stored="$tmp/data/artifacts/$(echo "$m" | cut -c1-2)/$m"
snapshot > "$tmp/before"
events0=$(sqlite3 "$db" "SELECT count(*) FROM events WHERE kind = 'artifact.corrupt'")
printf '\001' | dd of="$stored" bs=1 seek=1234567 conv=notrunc 2>/dev/null
check "one byte of the stored file flipped" $(! cmp -s "$stored" "$tmp/model"; echo $?)

get "$m"
body=$(head -c 600 "$tmp/out")
check "its download is refused (500)" $([ "$code" = 500 ]; echo $?)
check "with a clear message naming it" \
	$(echo "$body" | grep -q "artifact '$m' is corrupt in the store: its 3000000 bytes hash to '[0-9a-f]\{64\}': upload it again"; echo $?)
check "and none of its bytes sent: the answer is a JSON error" \
	$([ "$(head -c 10 "$tmp/out")" = '{"error":"' ] && [ "$(wc -c < "$tmp/out")" -lt 1000 ]; echo $?)
check "the log says so" $(grep -q "error.*artifact '$m' is corrupt" "$tmp/log"; echo $?)
get "$m"
check "asked again, still refused" $([ "$code" = 500 ] && grep -q 'corrupt in the store' "$tmp/out"; echo $?)
n=$(sqlite3 "$db" "SELECT count(*) FROM events WHERE kind = 'artifact.corrupt' AND detail LIKE '%$m%'")
check "the audit log has it once ($events0 -> $n)" $([ "$events0" = 0 ] && [ "$n" = 1 ]; echo $?)
snapshot > "$tmp/after"
check "the registry is otherwise unchanged" $(cmp -s "$tmp/before" "$tmp/after"; echo $?)
get "$d"
check "other artifacts are still served" $([ "$code" = 200 ] && cmp -s "$tmp/out" "$tmp/data.bin"; echo $?)

stored_d="$tmp/data/artifacts/$(echo "$d" | cut -c1-2)/$d"
truncate -s 4999 "$stored_d"
get "$d"
check "a stored file cut short is refused too" $([ "$code" = 500 ] && grep -q "'$d' is corrupt in the store: its 4999 bytes" "$tmp/out"; echo $?)

check "uploading the right bytes again is accepted" $([ "$(put "$m" "$tmp/model")" = 201 ]; echo $?)
get "$m"
check "and heals it: served again, the same bytes" $([ "$code" = 200 ] && cmp -s "$tmp/out" "$tmp/model"; echo $?)
req=$(curl -s "$base/events?kind=artifact.corrupt")
check "GET /events shows the corruption" $(echo "$req" | grep -q "\"sha256\":\"$m\""; echo $?)
done_testing
