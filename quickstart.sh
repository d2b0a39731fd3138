#!/bin/bash
# quickstart.sh: the README's first command, the main job. Installs what is
# missing, builds, and runs the most complete path modula has today. It says
# plainly what it runs and what it does not run yet.
cd "$(dirname "$0")" || exit 1
. build-aux/setup.sh
setup_packages main || exit 1
setup_npm web || exit 1
setup_build || exit 1
setup_say "compute devices this build can use"
./worker/modula-engine devices || exit 1
setup_say "modula $(./cli/modula --version | head -n1 | awk '{print $3}') is built."
echo "Not yet in the main job: the daemon, the workers and the MoDULA-Flan vs"
echo "MoDULA-Res comparison (they land with the engine, daemon and sweep issues)."
