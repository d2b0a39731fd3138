#!/bin/sh
# daemon/resume.sh: transfers between the worker's store client
# (worker/worker_store.c, driven by tests/deploy/store-tool) and a real
# modulad resume after a dropped connection instead of starting over. A
# TCP proxy (cut_proxy.py) between them cuts the first connection after
# 1,000,000 bytes and counts every byte: an upload of 3,000,000 bytes is
# resumed where the daemon's held bytes end (GET .../upload, then one PUT
# part with Content-Range) and sends only the rest; a download cut the
# same way goes on with Range: bytes=N-; both end with the right sha256.
# The daemon keeps what a cut part brought (fsync'd), even across its own
# restart.
. "$top_srcdir/tests/lib.sh"
modulad="$top_builddir/daemon/modulad"
TOOL="$top_builddir/tests/deploy/store-tool"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-resume-XXXXXX")
pid= proxy=
cleanup() {
	[ -n "$proxy" ] && kill "$proxy" 2>/dev/null && wait "$proxy" 2>/dev/null
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

start() {
	: > "$tmp/log"
	"$modulad" --data "$tmp/data" --http "127.0.0.1:${port:-0}" --broker 'tcp://127.0.0.1:*' --log "$tmp/log" &
	pid=$!
	for _ in $(seq 1 100); do
		port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$tmp/log" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.1
	done
}
# proxy UP DOWN: a fresh cut_proxy.py in front of the daemon.
proxy() {
	[ -n "$proxy" ] && kill "$proxy" 2>/dev/null && wait "$proxy" 2>/dev/null
	rm -f "$tmp/stats" "$tmp/pport"
	python3 "$top_srcdir/tests/daemon/cut_proxy.py" "$port" "$1" "$2" "$tmp/stats" > "$tmp/pport" &
	proxy=$!
	for _ in $(seq 1 100); do [ -s "$tmp/pport" ] && break; sleep 0.1; done
	url="http://127.0.0.1:$(cat "$tmp/pport")/api/v1/artifacts"
}
# settled: wait until the proxy has seen every connection close.
settled() {
	for _ in $(seq 1 100); do
		[ -s "$tmp/stats" ] && [ "$(jq .open "$tmp/stats")" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

start
check "daemon started on a free port ($port)" $([ -n "$port" ]; echo $?)
STORE_TOKEN=$(cat "$tmp/data/session.token")
export STORE_TOKEN
size=3000000
head -c $size /dev/urandom > "$tmp/model.bin"
sha=$(sha256sum "$tmp/model.bin" | cut -d' ' -f1)

# --- upload, cut after 1,000,000 bytes ---
proxy 1000000 0
"$TOOL" put "$tmp/cache-up" "$url" "$tmp/model.bin" > "$tmp/put.out" 2> "$tmp/put.err"
check "an upload cut after 1,000,000 bytes succeeds" $?
settled
held=$(sed -n 's/.*resuming the upload to .* at byte \([0-9]*\) of.*/\1/p' "$tmp/put.err" | head -1)
check "the second try resumed at the bytes the daemon held (byte ${held:-none})" \
	$([ -n "$held" ] && [ "$held" -gt 500000 ] && [ "$held" -le 1000000 ]; echo $?)
ups=$(jq -c .up "$tmp/stats")
after=$(jq '[.up as $u | range(0; $u | length) | select($u[.] != 1000000) | $u[.]] | add' "$tmp/stats")
diag "bytes from the worker per connection: $ups"
check "the tries after the cut sent only the rest ($after bytes for $((size - held)) left)" \
	$([ "$after" -ge $((size - held)) ] && [ "$after" -lt $((size - held + 20000)) ]; echo $?)
total=$(jq '.up | add' "$tmp/stats")
check "in all $total bytes went up for a $size-byte file (a whole retry sends over 4,000,000)" \
	$([ "$total" -lt $((size + 1000000 - held + 20000)) ]; echo $?)
got=$(curl -s "http://127.0.0.1:$port/api/v1/artifacts/$sha" | sha256sum | cut -d' ' -f1)
check "the stored artifact has the right sha256" $([ "$got" = "$sha" ]; echo $?)
check "the registry has it with its size" \
	$([ "$(sqlite3 "$tmp/data/registry.db" "SELECT size FROM artifacts WHERE sha256 = '$sha'")" = $size ]; echo $?)
check "no partial file is left" $(! ls "$tmp/data/artifacts/tmp/" | grep -q partial; echo $?)

# --- download, cut after 1,000,000 bytes ---
proxy 0 1000000
"$TOOL" get "$tmp/cache-down" "$url" "$sha" "$tmp/copy.bin" > "$tmp/get.out" 2> "$tmp/get.err"
check "a download cut after 1,000,000 bytes succeeds" $?
settled
check "into the same bytes" $(cmp -s "$tmp/copy.bin" "$tmp/model.bin"; echo $?)
from=$(sed -n 's/.*resuming the download of .* at byte \([0-9]*\).*/\1/p' "$tmp/get.err" | head -1)
down=$(jq '.down | add' "$tmp/stats")
diag "bytes from the daemon per connection: $(jq -c .down "$tmp/stats")"
check "it went on from byte ${from:-none} with a Range request, $down bytes down in all" \
	$([ -n "$from" ] && [ "$from" -gt 500000 ] && [ "$down" -lt $((size + 1000000 - from + 20000)) ]; echo $?)

# --- a part cut, the daemon restarted, the upload resumed ---
head -c 2000000 /dev/urandom > "$tmp/ckpt.bin"
sha2=$(sha256sum "$tmp/ckpt.bin" | cut -d' ' -f1)
head -c 700000 "$tmp/ckpt.bin" > "$tmp/head.bin"
proxy 400000 0
curl -s -o /dev/null -H "Authorization: Bearer $STORE_TOKEN" -T "$tmp/ckpt.bin" \
	-H "Content-Range: bytes 0-1999999/2000000" "$url/$sha2/upload"
settled
kill -TERM "$pid"; wait "$pid"; pid=
start
held=$(curl -s -H "Authorization: Bearer $STORE_TOKEN" "http://127.0.0.1:$port/api/v1/artifacts/$sha2/upload" | jq .offset)
check "after a cut part and a daemon restart it still holds what arrived (${held:-?} bytes)" \
	$([ -n "$held" ] && [ "$held" -gt 0 ] && [ "$held" -le 400000 ] && cmp -s -n "$held" "$tmp/ckpt.bin" "$tmp/data/artifacts/tmp/partial.$sha2"; echo $?)
proxy 0 0
"$TOOL" put "$tmp/cache-up2" "$url" "$tmp/ckpt.bin" > /dev/null 2> "$tmp/put2.err"
check "and the worker's upload finishes it" $?
settled
sent=$(jq '.up | add' "$tmp/stats")
check "sending only the rest ($sent bytes for $((2000000 - held)) left)" \
	$([ "$sent" -lt $((2000000 - held + 20000)) ]; echo $?)
got=$(curl -s "http://127.0.0.1:$port/api/v1/artifacts/$sha2" | sha256sum | cut -d' ' -f1)
check "with the right sha256" $([ "$got" = "$sha2" ]; echo $?)
[ "$tap_failed" -eq 0 ] || sed 's/^/# /' "$tmp/put.err" "$tmp/get.err" "$tmp/log"
done_testing
