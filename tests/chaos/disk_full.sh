#!/bin/sh
# tests/chaos/disk_full.sh: modulad's data folder on a 4 MiB tmpfs that
# fills up (as root; otherwise a folder made read-only with chmod). A job
# submission and an artifact upload then fail with a clear error, the
# daemon keeps serving reads, the registry passes PRAGMA integrity_check
# and still holds exactly what was committed before, no partial artifact
# is left, and once space is back writes work again.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

data=$tmp/data
mkdir -p "$data"
mode=chmod
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=4m modula-chaos "$data" 2>/dev/null; then
	mode=tmpfs
fi
disk_cleanup() {
	[ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	daemon_pid=""
	[ $mode = tmpfs ] && umount "$data"
	chmod -R u+w "$tmp" 2>/dev/null
	cleanup
}
trap disk_cleanup EXIT
diag "the full disk is a $mode"

op=$("$MODULAD" token create --data "$data" --role operator)
wk=$("$MODULAD" token create --data "$data" --role worker)
start_daemon
n=0
until curl -sf "$api/health" >/dev/null 2>&1 || [ $n -ge 100 ]; do sleep 0.1; n=$((n + 1)); done
# submit PAD_BYTES: a noop job whose spec carries that much padding.
submit() {
	printf '{"kind":"noop","spec":{"pad":"%s"}}' "$(head -c "$1" /dev/zero | tr '\0' x)" >"$tmp/body"
	curl -s -o "$tmp/out" -w '%{http_code}' -H "Authorization: Bearer $op" --data-binary "@$tmp/body" "$api/jobs"
}
codes="$(submit 1) $(submit 1) $(submit 1)"
check "3 jobs submitted ($codes)" $([ "$codes" = "201 201 201" ]; echo $?)

# Fill the disk (or take write permission away).
if [ $mode = tmpfs ]; then
	dd if=/dev/zero of="$data/filler" bs=16k 2>/dev/null
else
	chmod a-w "$data" "$data/artifacts" "$data"/registry.db*
fi
code=$(submit 300000)
check "a job submission on a full disk fails with 500 ($code): $(head -c 160 "$tmp/out")" \
	$([ "$code" = 500 ] && grep -qi 'full\|space\|readonly\|read-only\|permission' "$tmp/out"; echo $?)
head -c 600000 /dev/urandom >"$tmp/blob"
sha=$(sha256sum "$tmp/blob" | cut -d' ' -f1)
code=$(curl -s -o "$tmp/out" -w '%{http_code}' -H "Authorization: Bearer $wk" -X PUT --data-binary "@$tmp/blob" \
	"$api/artifacts/$sha?kind=dataset")
check "an artifact upload on a full disk fails with a clear error ($code): $(head -c 160 "$tmp/out")" \
	$([ "$code" -ge 400 ] && grep -qi 'full\|space\|permission\|cannot' "$tmp/out"; echo $?)
curl -sf "$api/jobs" >"$tmp/jobs"
check "reads still work" $?
kill -0 "$daemon_pid"
check "modulad is alive" $?
left=$(find "$data/artifacts" -type f | wc -l)
check "no partial artifact left in the store ($left files)" $([ "$left" = 0 ]; echo $?)

# Space back.
if [ $mode = tmpfs ]; then rm -f "$data/filler"; else chmod -R u+w "$data"; fi
ic=$(sql "PRAGMA integrity_check")
n=$(sql "SELECT count(*) FROM jobs")
check "the registry is intact ($ic) and holds the 3 committed jobs ($n)" $([ "$ic" = ok ] && [ "$n" = 3 ]; echo $?)
code="$(submit 1) $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $wk" -X PUT \
	--data-binary "@$tmp/blob" "$api/artifacts/$sha?kind=dataset")"
check "with space back, writes work again ($code)" $([ "$code" = "201 201" ]; echo $?)
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
