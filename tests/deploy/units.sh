#!/bin/sh
# tests/deploy/units.sh: the deployment files. The systemd units built by
# make name the configured programs (no @...@ left), carry the state
# folder, the sandbox and the restart policy, and pass `systemd-analyze
# verify` (pointed at the built programs) where it runs; the Slurm template
# parses (bash -n) and is clean under shellcheck when it is installed.
. "$top_srcdir/tests/lib.sh"

units="$top_builddir/dist/systemd"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modula-units.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for u in modulad.service modula-worker@.service; do
	f="$units/$u"
	check "$u is built" $([ -s "$f" ]; echo $?)
	check "$u has its paths filled in" $(! grep -q '@[a-z]*@' "$f"; echo $?)
	prog=$(sed -n 's|^ExecStart=\(/[^ ]*\).*|\1|p' "$f")
	case $u in modulad*) want=modulad ;; *) want=modula-worker ;; esac
	check "$u runs the installed $want ($prog)" $([ "${prog##*/}" = "$want" ]; echo $?)
	for d in StateDirectory= DynamicUser=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
		NoNewPrivileges=yes Restart=on-failure; do
		check "$u: $d" $(grep -q "^$d" "$f"; echo $?)
	done
done
grep -q '^Environment=CUDA_VISIBLE_DEVICES=%i' "$units/modula-worker@.service"
check "the worker instance names its GPU" $?

# systemd-analyze verify needs the programs to exist: point a copy at the
# built ones.
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$tmp/bin"
	ln -s "$top_builddir/daemon/modulad" "$tmp/bin/modulad"
	ln -s "$top_builddir/worker/modula-worker" "$tmp/bin/modula-worker"
	for u in modulad.service modula-worker@.service; do
		sed -e "s|^ExecStart=/[^ ]*/|ExecStart=$tmp/bin/|" "$units/$u" >"$tmp/$u"
	done
	cp "$tmp/modula-worker@.service" "$tmp/modula-worker@0.service"
	SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$tmp/modulad.service" \
		"$tmp/modula-worker@0.service" >"$tmp/verify.log" 2>&1
	st=$?
	sed 's/^/# /' "$tmp/verify.log"
	check "systemd-analyze verify accepts both units" $st
else
	diag "systemd-analyze is not installed: the units are checked by content only"
fi

sb="$top_srcdir/experiments/slurm/modula-workers.sbatch"
bash -n "$sb"
check "the Slurm template parses (bash -n)" $?
grep -q '^#SBATCH --requeue' "$sb"
check "the Slurm template asks for --requeue" $?
if command -v shellcheck >/dev/null; then
	shellcheck "$sb" | sed 's/^/# /'
	check "shellcheck finds nothing in the Slurm template" $(shellcheck "$sb" >/dev/null; echo $?)
else
	diag "shellcheck is not installed (apt-get install shellcheck): bash -n only"
fi
done_testing
