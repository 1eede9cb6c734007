#!/usr/bin/env bash
# twinbench's entry point on a fresh machine with Python 3.11 and pip:
#   bash run.sh compare [options]   the main job: accuracy and throughput of both frameworks
#                                   on this machine, ending in reports/out/report.md
#   bash run.sh test [pytest args]  the test suite (the fast correctness tier by default)
# It creates .venv on first use (about 2.5 minutes, 7.6 GB: the frameworks are large) and
# reinstalls only when a requirements file or the TensorFlow build (CUDA or CPU) changes. Data: --data PATH or TWINBENCH_DATA;
# without either, the canonical CIFAR-10 is downloaded and md5-verified on first use.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
stamp="$VENV/.requirements.sha256"

# TensorFlow sees an NVIDIA GPU on Linux only with its CUDA extra (the CUDA libraries as pip
# packages); plain `tensorflow` runs on the CPU there. So: the extra where a driver answers
# (nvidia-smi lists a GPU), plain TensorFlow elsewhere. TWINBENCH_TF_BUILD=cuda|cpu overrides.
# The choice is part of the environment's stamp: a venv built for one is rebuilt for the other.
tf_build() {
    case "${TWINBENCH_TF_BUILD:-}" in
        cuda|cpu) echo "$TWINBENCH_TF_BUILD"; return ;;
        "") ;;
        *) echo "run.sh: TWINBENCH_TF_BUILD must be cuda or cpu, not '$TWINBENCH_TF_BUILD'" >&2
           exit 2 ;;
    esac
    if [ "$(uname -s)" = Linux ] && command -v nvidia-smi >/dev/null 2>&1 \
            && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo cuda
    else
        echo cpu
    fi
}
TF_BUILD=$(tf_build)
export TWINBENCH_TF_BUILD="$TF_BUILD"   # the report header names the build in use
if [ "${1:-}" = --print-tf-build ]; then echo "$TF_BUILD"; exit 0; fi   # for the tests
extra=()
if [ "$TF_BUILD" = cuda ]; then
    tf_version=$(sed -n 's/^tensorflow==//p' requirements/tf.txt)
    extra=("tensorflow[and-cuda]==$tf_version")
fi
want=$({ cat requirements.txt requirements/*.txt; echo "tensorflow build: $TF_BUILD"; } \
       | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "run.sh: installing requirements into $VENV, TensorFlow build: $TF_BUILD" \
         "(first run: a few minutes)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt \
        ${extra[@]+"${extra[@]}"}
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
