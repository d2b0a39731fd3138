#!/bin/sh
# tests/e2e/curve.sh: CURVE over TCP: keys from `modulad keygen` and
# `modula-worker keygen`; a worker whose public key is in workers.allow
# runs jobs, one whose key is not is refused by the ZAP handler.
. "$top_srcdir/tests/e2e/e2e_lib.sh"

mkdir -p "$tmp/data" "$tmp/keys"
"$MODULAD" keygen "$tmp/keys/broker" >/dev/null
check "modulad keygen writes a keypair" $?
"$WORKER" keygen "$tmp/keys/good" >/dev/null && "$WORKER" keygen "$tmp/keys/bad" >/dev/null
check "modula-worker keygen writes keypairs" $?
cp "$tmp/keys/good.pub" "$tmp/data/workers.allow"
"$MODULAD" --data "$tmp/data" --http "127.0.0.1:$http_port" --broker "$endpoint" \
	--curve-secret "$tmp/keys/broker.key" --curve-allow "$tmp/data/workers.allow" \
	>>"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
wait_registry
start_worker bad --curve-server-key "$tmp/keys/broker.pub" --curve-keys "$tmp/keys/bad.key"
start_worker good --curve-server-key "$tmp/keys/broker.pub" --curve-keys "$tmp/keys/good.key"
wait_for "SELECT count(*) FROM workers WHERE state = 'up'" 1
check "the allowed worker is up" $?
"$E2E_TOOL" submit "$db" noop 10
wait_for "SELECT count(*) FROM jobs WHERE state = 'succeeded'" 10
check "it runs jobs over CURVE" $?
bad=$(sql "SELECT count(*) FROM workers WHERE id = 'bad'")
check "the worker with an unknown key never got in ($bad)" $([ "$bad" = 0 ]; echo $?)
grep -q "not in" "$tmp/daemon.log"
check "the daemon logs the refusal" $?
[ "$tap_failed" -eq 0 ] || show_logs
done_testing
