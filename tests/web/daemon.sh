# tests/web/daemon.sh: start one modulad for the browser tests and the render
# benchmark (sourced, never run): 127.0.0.1 on a free port chosen by the
# kernel, the dashboard from the source tree's web/, a temporary data
# folder, an operator and a viewer token; all of it removed on exit.
modulad="$top_builddir/daemon/modulad"
web_tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-web-XXXXXX")
web_pid=
web_cleanup() {
	[ -n "$web_pid" ] && kill "$web_pid" 2>/dev/null && wait "$web_pid" 2>/dev/null
	rm -rf "$web_tmp"
}
trap web_cleanup EXIT INT TERM

# web_start: sets WEB_BASE, WEB_DB, WEB_OP, WEB_VIEW (exported); 1 when the
# daemon did not come up.
web_start() {
	"$modulad" --data "$web_tmp/data" --http 127.0.0.1:0 --broker 'tcp://127.0.0.1:*' \
		--web "$top_srcdir/web" --log "$web_tmp/log" &
	web_pid=$!
	port=
	for _ in $(seq 1 100); do
		port=$(sed -n 's/.*http: listening on .*(port \([0-9]*\)).*/\1/p' "$web_tmp/log" 2>/dev/null)
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || { cat "$web_tmp/log" >&2; return 1; }
	WEB_BASE="http://127.0.0.1:$port"
	WEB_DB="$web_tmp/data/registry.db"
	WEB_OP=$("$modulad" token create --data "$web_tmp/data" --role operator) || return 1
	WEB_VIEW=$("$modulad" token create --data "$web_tmp/data" --role viewer) || return 1
	WEB_PROFILE="$web_tmp/chromium-profile"
	export WEB_BASE WEB_DB WEB_OP WEB_VIEW WEB_PROFILE
}
