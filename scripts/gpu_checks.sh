#!/usr/bin/env bash
# Every GPU check of twinbench in one call, on any Linux machine with an NVIDIA GPU:
#
#   bash scripts/gpu_checks.sh OUTDIR [--data PATH] [--framework tf|torch]... [--budget S]
#                                     [--device gpu|cpu] [--spread-runs N]
#
# OUTDIR      where everything goes (created): gpu_checks.log, nvidia-smi.txt, correctness.xml,
#             recipes/ (result rows), bench/ (gpu_bench.sh's rows, log and report), report/
#             (the report of all rows together).
# --data      CIFAR-10 for the recipes (default: TWINBENCH_DATA, else the canonical release is
#             downloaded and md5-verified, as everywhere in twinbench).
# --framework passed to pytest (repeatable); default: every installed framework. The recipe
#             step trains torch (the CUDA-graph loop is torch's).
# --budget    seconds for the throughput step (default 900; torch.compile gets what is left).
# --device    cpu: a dry run of the whole script on a CPU (small recipe subset, CPU batches).
# --spread-runs N: quick-tier benchmark runs (one pytest session each) for the drift between
#             runs that a regression gate must see through (default 5; 0 skips the step).
#
# Steps, each logged; a failing step does not stop the next, and the exit code is the first
# failure's (2: no GPU, or bad arguments, before anything runs):
#   1. correctness on the GPU: shapes, float64 finite differences, parameter counts, the
#      training loop, CUDA-graph epochs against the eager loop;
#   2. the recipes: keras_cnn_adam and lenet_sgd, 10 epochs, data resident, many steps per
#      CUDA graph, then keras_cnn_adam eager for comparison (scripts/gpu_recipes.py);
#   3. the throughput tier and its report (scripts/gpu_bench.sh);
#   4. the drift between runs: the quick tier N times, then `python -m reports spread`, which
#      says how many baseline and current runs a gate at the device's threshold needs;
#   5. one report of every row: python -m reports render.
# Python: $PYTHON, else the .venv that `bash run.sh` builds (with TensorFlow's CUDA extra where
# a driver answers), else python3.
set -u -o pipefail
usage() { echo "usage: bash scripts/gpu_checks.sh OUTDIR [--data PATH] [--framework tf|torch]... [--budget S] [--device gpu|cpu] [--spread-runs N]" >&2; exit 2; }

[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
OUT=$1; shift
DATA=${TWINBENCH_DATA:-}
DEVICE=gpu
BUDGET_S=900
SPREAD_RUNS=5
FRAMEWORKS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) [ $# -ge 2 ] || usage; DATA=$2; shift 2 ;;
    --framework) [ $# -ge 2 ] || usage; FRAMEWORKS+=(--framework "$2"); shift 2 ;;
    --budget) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage; BUDGET_S=$2; shift 2 ;;
    --device) [ $# -ge 2 ] && [[ $2 =~ ^(gpu|cpu)$ ]] || usage; DEVICE=$2; shift 2 ;;
    --spread-runs) [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] || usage; SPREAD_RUNS=$2; shift 2 ;;
    *) echo "gpu_checks.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
if [ -n "$DATA" ] && [ ! -e "$DATA" ]; then
  echo "gpu_checks.sh: --data $DATA does not exist" >&2; exit 2
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.." || exit 2
# The environment `bash run.sh` builds, when there is one (TensorFlow's CUDA extra included).
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PYTHON=${PYTHON:-python3}
export PYTHON   # gpu_bench.sh uses the same interpreter
LOG="$OUT/gpu_checks.log"
: >"$LOG"
export PYTHONUNBUFFERED=1
if [ "$DEVICE" = gpu ]; then
  if ! nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1; then
    echo "gpu_checks.sh: no NVIDIA GPU here (nvidia-smi failed: see $OUT/nvidia-smi.txt);" \
         "--device cpu runs the script as a dry run on the CPU" | tee -a "$LOG" >&2
    exit 2
  fi
fi
STATUS=0
step() {   # step NAME CMD...: run, log, remember the first failure
  local name=$1; shift
  echo "== $name: $*" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc" | tee -a "$LOG"
  [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ] && STATUS=$rc
  return 0
}
data_args=()
[ -n "$DATA" ] && data_args=(--data "$DATA")

step correctness "$PYTHON" -m pytest --device "$DEVICE" ${FRAMEWORKS[@]+"${FRAMEWORKS[@]}"} \
  -p no:cacheprovider -q suites/test_shapes.py suites/test_gradients.py suites/test_models.py \
  suites/test_training.py --junitxml="$OUT/correctness.xml" ${DATA:+"--data=$DATA"}

dry_run=()
[ "$DEVICE" = cpu ] && dry_run=(--images 2000 --epochs 1)
step recipes "$PYTHON" scripts/gpu_recipes.py --device "$DEVICE" --results "$OUT/recipes" \
  --eager keras_cnn_adam ${data_args[@]+"${data_args[@]}"} ${dry_run[@]+"${dry_run[@]}"}

step throughput bash scripts/gpu_bench.sh "$OUT/bench" --device "$DEVICE" --budget "$BUDGET_S" \
  ${FRAMEWORKS[@]+"${FRAMEWORKS[@]}"}

for k in $(seq 1 "$SPREAD_RUNS"); do
  step "spread run $k/$SPREAD_RUNS" "$PYTHON" -m pytest -m benchmark --quick --device "$DEVICE" \
    ${FRAMEWORKS[@]+"${FRAMEWORKS[@]}"} -p no:cacheprovider -q suites/test_throughput.py \
    "--results=$OUT/spread/run-$k"
done
if [ "$SPREAD_RUNS" -ge 2 ]; then
  step spread "$PYTHON" -m reports spread "$OUT/spread"
fi

rows=()
for d in recipes bench/results; do [ -d "$OUT/$d" ] && rows+=("$OUT/$d"); done
if [ "${#rows[@]}" -gt 0 ]; then
  step report "$PYTHON" -m reports render "${rows[@]}" --out "$OUT/report"
fi
echo "== done, exit $STATUS; report: $OUT/report/report.md" | tee -a "$LOG"
exit "$STATUS"
