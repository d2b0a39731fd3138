#!/bin/sh
# tests/deploy/store.sh: the worker's artifact store client against a store
# that drops connections (flaky_http.py): an upload cut mid-body is resumed
# and lands whole, sending each byte once (the store checks its sha256), the
# tick hook runs while it backs off, a download cut short is resumed from
# where it stopped and checked, two
# fetches of one artifact download it once (the cache), and a refusal
# (4xx) is not retried. Not here: the daemon (tests/multihost/netns.sh).
. "$top_srcdir/tests/lib.sh"

TOOL="$top_builddir/tests/deploy/store-tool"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-store.XXXXXX")
srv=""
cleanup() {
	[ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# Up to 2 dropped uploads and 1 download cut at half.
python3 "$top_srcdir/tests/deploy/flaky_http.py" 2 1 >"$tmp/port" 2>"$tmp/server.log" &
srv=$!
n=50
while [ ! -s "$tmp/port" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
url="http://127.0.0.1:$(cat "$tmp/port")/a"
stats() { curl -s "http://127.0.0.1:$(cat "$tmp/port")/stats"; }

head -c 300000 /dev/urandom >"$tmp/big.bin"
sha=$(sha256sum "$tmp/big.bin" | cut -c1-64)
"$TOOL" put "$tmp/cache-up" "$url" "$tmp/big.bin" >"$tmp/put.out" 2>"$tmp/put.err"
check "an upload whose connection drops twice succeeds" $?
st=$(stats)
diag "store: $st"
check "on the third try, whole" $(echo "$st" | grep -q '"put": 3, "put_ok": 1'; echo $?)
check "each byte sent once: the tries resumed where the cut ones stopped" $(stats | grep -q '"put_bytes": 300000,'; echo $?)
grep -q "trying again" "$tmp/put.err"
check "the retries are logged" $?
ticks=$(sed -n 's/^ticks //p' "$tmp/put.out")
check "the tick hook (heartbeats) ran during the transfer ($ticks)" $([ "$ticks" -ge 1 ]; echo $?)

"$TOOL" get "$tmp/cache-down" "$url" "$sha" "$tmp/d1" "$tmp/d2" >"$tmp/get.out" 2>"$tmp/get.err"
check "a download cut short is tried again" $?
cmp -s "$tmp/big.bin" "$tmp/d1" && cmp -s "$tmp/big.bin" "$tmp/d2"
check "both copies are whole" $?
dl=$(sed -n 's/^downloads //p' "$tmp/get.out")
check "two fetches of one artifact download it once ($dl)" $([ "$dl" = 1 ]; echo $?)
check "two GETs on the wire: the cut one and its retry" $(stats | grep -q '"get": 2,'; echo $?)
check "the retry asked only for the rest (Range)" $(stats | grep -q '"get_bytes": 300000}'; echo $?)

"$TOOL" get "$tmp/cache-down" "$url" "$(echo x | sha256sum | cut -c1-64)" "$tmp/d3" >/dev/null 2>"$tmp/404.err"
check "a missing artifact fails" $([ $? -ne 0 ]; echo $?)
check "without a retry (404 is an answer)" $(! grep -q "trying again" "$tmp/404.err"; echo $?)
[ "$tap_failed" -eq 0 ] || { cat "$tmp"/*.err "$tmp/server.log" | sed 's/^/# /'; }
done_testing
