#!/usr/bin/env bash
# Lift the lock that a killed Snakemake left in this folder (.snakemake/locks), and only then: when no
# snakemake process whose working directory is this folder is still alive. `make run` and `make run-all`
# call it first, so a restart after a kill needs no `snakemake --unlock` by hand.
#
# It is a script, not a line of the Makefile, because a process search from inside a recipe matches the
# recipe's own shell (its command line holds the word snakemake); this script's command line does not.
set -euo pipefail

here=$(pwd -P)
[ -n "$(ls -A .snakemake/locks 2>/dev/null)" ] || exit 0
# a snakemake process: `snakemake ...`, `.../bin/snakemake ...` or `python -m snakemake ...`
for pid in $(pgrep -f '(^|[ /])snakemake( |$)' || true); do
    if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$here" ]; then
        echo "unlock-dead-run.sh: snakemake (pid $pid) is running in $here; its lock stays" >&2
        exit 0
    fi
done
echo "unlock-dead-run.sh: lifting the lock a killed run left in $here (snakemake --unlock)"
snakemake --unlock >/dev/null
