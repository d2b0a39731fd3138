#!/bin/sh
# tests/web/dashboard.sh: the dashboard's browser tests (TAP): a real
# modulad on a free port, then tests/web/dashboard.mjs drives Debian's
# chromium against it. Needs `npm ci --prefix web` (playwright-core) and
# /usr/bin/chromium, both put there by the README's test command.
. "$top_srcdir/tests/web/daemon.sh"
if [ ! -d "$top_srcdir/web/node_modules/playwright-core" ] || [ ! -x /usr/bin/chromium ]; then
	echo "not ok 1 - browser tests need web/node_modules (npm ci --prefix web) and /usr/bin/chromium (apt-get install chromium)"
	echo "1..1"
	exit 1
fi
if ! web_start; then
	echo "not ok 1 - modulad started"
	echo "1..1"
	exit 1
fi
node "$top_srcdir/tests/web/dashboard.mjs"
