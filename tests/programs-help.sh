#!/bin/sh
# programs-help.sh: every program answers --help and --version with exit 0,
# and refuses an unknown option with exit 2 and a message.
. "$top_srcdir/tests/lib.sh"
for p in daemon/modulad worker/modula-worker worker/modula-engine cli/modula; do
	bin="$top_builddir/$p"
	name=$(basename "$p")
	out=$("$bin" --help 2>&1); st=$?
	case "$out" in *usage:*) : ;; *) st=1 ;; esac
	check "$name --help exits 0 with a usage text" $st
	out=$("$bin" --version 2>&1); st=$?
	case "$out" in *"(modula) "*) : ;; *) st=1 ;; esac
	check "$name --version names the version" $st
	"$bin" --no-such-option >/dev/null 2>&1; st=$?
	[ $st -eq 2 ]; check "$name refuses an unknown option with exit 2" $?
done
done_testing
