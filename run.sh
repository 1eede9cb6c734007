#!/usr/bin/env bash
# twinbench's entry point on a fresh machine with Python 3.11 and pip:
#   bash run.sh compare [options]   the main job: accuracy and throughput of both frameworks
#                                   on this machine, ending in reports/out/report.md
#   bash run.sh test [pytest args]  the test suite (the fast correctness tier by default)
# It creates .venv on first use (about 2.5 minutes, 7.6 GB: the frameworks are large) and
# reinstalls only when a requirements file changes. Data: --data PATH or TWINBENCH_DATA;
# without either, the canonical CIFAR-10 is downloaded and md5-verified on first use.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "run.sh: installing requirements into $VENV (first run: a few minutes)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
fi

command="${1:-}"
shift || true
# pytest picks its root directory (and so finds conftest.py, which defines --data and
# --results) before it knows these options: "--data DIR" with an existing DIR would be taken
# for a test path. Joining them as "--data=DIR" makes either spelling work.
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --data|--results) if [ $# -ge 2 ]; then args+=("$1=$2"); shift 2; continue; fi ;;
    esac
    args+=("$1"); shift
done
set -- ${args[@]+"${args[@]}"}
case "$command" in
    compare) exec "$VENV/bin/python" -m twinbench compare "$@" ;;
    test)    exec "$VENV/bin/python" -m pytest "$@" ;;
    *)       echo "usage: bash run.sh compare [options] | bash run.sh test [pytest args]" >&2
             exit 2 ;;
esac
