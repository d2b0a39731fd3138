# tests/e2e/e2e_lib.sh: helpers of the end-to-end tests (sourced, never run).
# Starts modulad and modula-worker processes on 127.0.0.1 with random free
# ports in a temporary folder, and removes all of it on exit. Jobs are
# submitted straight into the registry (e2e-tool submit; the broker looks
# at least every second), and results are read with the sqlite3 CLI.
. "$top_srcdir/tests/lib.sh"

E2E_TOOL="$top_builddir/tests/e2e/e2e-tool"
WORKER="$top_builddir/worker/modula-worker"
MODULAD="$top_builddir/daemon/modulad"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-e2e.XXXXXX")
db="$tmp/data/registry.db"
pids=""
daemon_pid=""

cleanup() {
	for p in $pids $daemon_pid; do kill -9 "$p" 2>/dev/null; done
	for p in $pids $daemon_pid; do wait "$p" 2>/dev/null; done
	rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
endpoint="tcp://127.0.0.1:$(free_port)"
http_port=$(free_port)
api="http://127.0.0.1:$http_port/api/v1"

start_daemon() {
	"$MODULAD" --data "$tmp/data" --http "127.0.0.1:$http_port" --broker "$endpoint" \
		>>"$tmp/daemon.log" 2>&1 &
	daemon_pid=$!
}

# start_worker NAME [ARGS...]: prints nothing; the pid goes to $pids and
# to $tmp/NAME.pid.
start_worker() {
	name=$1; shift
	"$WORKER" --broker "$endpoint" --id "$name" --device cpu --work "$tmp/$name" "$@" \
		>>"$tmp/$name.log" 2>&1 &
	echo $! >"$tmp/$name.pid"
	pids="$pids $!"
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

# The registry must exist before jobs are submitted, and the HTTP API
# answer (any status) before a client is run: the daemon opens the
# registry before it listens, and a loaded machine can show the gap.
wait_registry() {
	wait_for "SELECT count(*) FROM sqlite_master WHERE name = 'jobs'" 1 || return 1
	n=300
	while [ "$n" -gt 0 ]; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$api/health" 2>/dev/null)" != 000 ] && return 0
		sleep 0.2
		n=$((n - 1))
	done
	diag "timed out waiting for the HTTP API at $api"
	return 1
}

show_logs() {
	for f in "$tmp"/*.log; do diag "--- $f"; tail -n 15 "$f" | sed 's/^/# /'; done
}
