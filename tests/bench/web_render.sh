#!/bin/sh
# tests/bench/web_render.sh: the dashboard's render benchmark (not a test).
# Run from a build folder: top_srcdir=../.. top_builddir=$PWD sh ../../tests/bench/web_render.sh
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$PWD}"
export top_srcdir top_builddir
. "$top_srcdir/tests/web/daemon.sh"
web_start || { echo "modulad did not start" >&2; exit 1; }
WEB_CHROMIUM=$(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}')
export WEB_CHROMIUM
node "$top_srcdir/tests/bench/web_render.mjs"
