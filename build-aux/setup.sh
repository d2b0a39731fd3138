# build-aux/setup.sh: set-up shared by the README's two commands (sourced).
#
# setup_packages KIND  installs the Debian packages KIND (main or test) needs
#                      that are missing; does nothing when all are there.
# setup_build          generates, configures and builds as needed; quick when
#                      nothing changed (make decides).
# setup_sources DIR    copies the sources to DIR for a build of its own.
# Runs as root on Debian 12. Never downloads anything but Debian and npm
# packages.

MODULA_PKGS_BUILD="build-essential autoconf automake pkg-config libsqlite3-dev libzmq3-dev
 libcjson-dev libcurl4-openssl-dev libmicrohttpd-dev libopenblas-dev libpcre2-dev libssl-dev
 libutf8proc-dev clang libclang-rt-14-dev
 fortunes"
MODULA_PKGS_TEST="python3 python3-torch python3-numpy iproute2 sqlite3 curl jq chromium shellcheck valgrind"

setup_say() { printf '==> %s\n' "$*" >&2; }

setup_packages() {
	local want="$MODULA_PKGS_BUILD" missing=""
	[ "$1" = test ] && want="$want $MODULA_PKGS_TEST"
	# node and npm: Debian's packages unless a node is already installed.
	! command -v npm >/dev/null 2>&1 && want="$want nodejs npm"
	for p in $want; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	setup_say "installing Debian packages:$missing"
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: these packages are missing:$missing; run as root or install them with apt-get" >&2
		return 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq || return 1
	apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
		echo "setup: apt-get install failed for:$missing" >&2; return 1; }
}

# setup_npm DIR: install DIR's npm packages from its lockfile (npm ci) when
# node_modules is missing or older than the lockfile.
setup_npm() {
	local dir=$1
	[ -f "$dir/package-lock.json" ] || return 0
	if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
		setup_say "installing npm packages in $dir (npm ci)"
		npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null || {
			echo "setup: npm ci failed in '$dir'" >&2; return 1; }
		touch "$dir/node_modules"
	fi
}

setup_build() {
	local jobs
	jobs=$(nproc 2>/dev/null || echo 2)
	mkdir -p m4
	if [ ! -x configure ] || [ configure.ac -nt configure ]; then
		setup_say "generating the build system (autoreconf)"
		autoreconf -fi >/dev/null 2>&1 || { autoreconf -fi; return 1; }
	fi
	if [ ! -f Makefile ] || [ ! -f config.status ]; then
		setup_say "configuring"
		./configure -q ${MODULA_CONFIGURE_FLAGS:-} || return 1
	fi
	setup_say "building (make -j$jobs)"
	make -s -j"$jobs" || return 1
}

# setup_sources DIR: copy the sources (git's tracked and untracked, not
# ignored, files) to DIR with their times, so that make there rebuilds only
# what changed, and link the npm folders. A second build needs its own copy:
# automake refuses an out-of-tree build of a source folder configured in
# place (./test.sh's build), whose objects make would take through VPATH.
setup_sources() {
	local dir=$1 d
	if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		echo "setup: copying the sources to '$dir' needs a git checkout; run 'configure' from a build folder instead" >&2
		return 1
	fi
	mkdir -p "$dir" || return 1
	git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -f "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf - | tar -xf - -C "$dir" || {
		echo "setup: cannot copy the sources to '$dir'" >&2; return 1; }
	for d in web tests/formats; do
		[ -d "$d/node_modules" ] && ln -sfn "$PWD/$d/node_modules" "$dir/$d/node_modules"
	done
	return 0
}
