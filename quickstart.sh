#!/bin/bash
# quickstart.sh: the README's first command, the main job. Sets up and
# builds as needed, starts modulad and two CPU workers (plus a CUDA worker
# when a GPU answers) unless they already run, submits
# experiments/quickstart.json (base, LoRA, MoLoRA, MoDULA-Flan, MoDULA-Res
# on the embedded suite, with the tiny model pretrained by the engine),
# follows it and prints the comparison. The daemon and workers keep running.
#
#   ./quickstart.sh        run the main job (a second run reuses everything)
#   ./quickstart.sh stop   stop the daemon and the workers
#
# Data, logs, pid files and the operator token are in ./_data (MODULA_DATA
# overrides it); the API is on 127.0.0.1:8600 and the broker on
# tcp://127.0.0.1:8601 (MODULA_HTTP_PORT, MODULA_BROKER_PORT). MODULA_BUILD=DIR
# uses the programs of an existing out-of-tree build instead of building
# in the source tree.
# Not a service manager: see docs/deploy.md for systemd units.
cd "$(dirname "$0")" || exit 1
DATA=${MODULA_DATA:-$PWD/_data}
HTTP_PORT=${MODULA_HTTP_PORT:-8600}
BROKER="tcp://127.0.0.1:${MODULA_BROKER_PORT:-8601}"
SPEC=${MODULA_SPEC:-experiments/quickstart.json}
B=${MODULA_BUILD:-.}
export MODULA_API="http://127.0.0.1:$HTTP_PORT"

say() { printf '==> %s\n' "$*" >&2; }

# alive NAME: is the process of DATA/NAME.pid running?
alive() { [ -f "$DATA/$1.pid" ] && kill -0 "$(cat "$DATA/$1.pid")" 2>/dev/null; }

stop_all() {
	local n
	for n in worker-cuda worker-cpu2 worker-cpu1 modulad; do
		if alive "$n"; then
			say "stopping $n (pid $(cat "$DATA/$n.pid"))"
			kill "$(cat "$DATA/$n.pid")"
		fi
		rm -f "$DATA/$n.pid"
	done
}

if [ "$1" = stop ]; then
	stop_all
	exit 0
elif [ -n "$1" ]; then
	echo "usage: ./quickstart.sh [stop]" >&2
	exit 2
fi

t0=$(date +%s)
. build-aux/setup.sh
setup_packages main || exit 1
setup_npm web || exit 1
[ -n "$MODULA_BUILD" ] || setup_build || exit 1
mkdir -p "$DATA" || exit 1

if ! alive modulad; then
	say "starting modulad (data in $DATA, log $DATA/modulad.log)"
	setsid "$B"/daemon/modulad --data "$DATA" --http "127.0.0.1:$HTTP_PORT" --broker "$BROKER" --web web \
		--log "$DATA/modulad.log" &
	echo $! >"$DATA/modulad.pid"
fi
n=0
until "$B"/cli/modula workers >/dev/null 2>&1; do
	n=$((n + 1))
	if [ $n -gt 100 ] || ! alive modulad; then
		echo "quickstart: modulad did not come up; see $DATA/modulad.log" >&2
		tail -n 5 "$DATA/modulad.log" >&2
		exit 1
	fi
	sleep 0.1
done

# One engine thread per CPU worker: two workers share two cores. setsid: the
# daemon and workers outlive this script and its terminal.
start_worker() {
	local name=$1; shift
	alive "$name" && return 0
	say "starting $name (log $DATA/$name.log)"
	OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=passive \
		setsid "$B"/worker/modula-worker --broker "$BROKER" --id "$(hostname)-$name" --work "$DATA/work/$name" \
		"$@" >>"$DATA/$name.log" 2>&1 &
	echo $! >"$DATA/$name.pid"
}
start_worker worker-cpu1 --device cpu
start_worker worker-cpu2 --device cpu
if "$B"/worker/modula-engine devices 2>/dev/null | grep -q '^cuda: available'; then
	start_worker worker-cuda --device cuda
fi

if [ ! -s "$DATA/operator.token" ]; then
	say "making an operator token ($DATA/operator.token)"
	(umask 077 && "$B"/daemon/modulad token create --data "$DATA" --role operator \
		--note quickstart >"$DATA/operator.token") || exit 1
fi
export MODULA_TOKEN_FILE="$DATA/operator.token"

say "submitting $SPEC"
out=$("$B"/cli/modula submit "$SPEC") || exit 1
echo "$out"
exp=$(printf '%s\n' "$out" | sed -n "s/^experiment \([0-9][0-9]*\) .*/\1/p" | head -n 1)
[ -n "$exp" ] || { echo "quickstart: cannot read the experiment id" >&2; exit 1; }

say "progress (modula watch $exp)"
"$B"/cli/modula watch "$exp"
st=$?
say "comparison (modula compare $exp)"
"$B"/cli/modula compare "$exp" || st=1
echo
echo "Done in $(( $(date +%s) - t0 )) s. modulad and the workers keep running:"
echo "  dashboard   http://127.0.0.1:$HTTP_PORT/  (token: $DATA/operator.token)"
echo "  command     MODULA_TOKEN_FILE=$DATA/operator.token "$B"/cli/modula ls"
echo "  logs        $DATA/*.log"
echo "  stop        ./quickstart.sh stop"
exit $st
