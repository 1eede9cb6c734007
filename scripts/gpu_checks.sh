#!/usr/bin/env bash
# Every GPU check of twinbench in one call of a lent GPU machine (torch only: it has no
# TensorFlow), within one 10-minute command; everything it writes goes under $OUT.
#
# Before the call, here (the dataset does not travel otherwise; the folder is git-ignored):
#   python scripts/pack_images.py pack ../shared/datasets/cifar10-jpeg .gpu-data/cifar10-jpeg.npz
# The call: command `bash scripts/gpu_checks.sh`, carry [".gpu-data"], timeout_s 600.
#
# Steps, each time-boxed, each logged; a failing step does not stop the next:
#   1. correctness on the GPU, torch side: shapes, float64 finite differences, parameter
#      counts, the training loop, CUDA-graph epochs against the eager loop (~1 min);
#   2. the recipes: keras_cnn_adam and lenet_sgd, 10 epochs, data resident, many steps per
#      CUDA graph, then keras_cnn_adam eager for comparison (targets: 5 s and 12 s) (~2 min);
#   3. the throughput tier and its report: scripts/gpu_bench.sh (~5 min).
set -u -o pipefail
: "${OUT:?set OUT to the directory that comes back}"
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
export PYTHONUNBUFFERED=1 TWINBENCH_CACHE=/tmp/twinbench-cache
PYTHON=${PYTHON:-python3}
STATUS=0
step() {   # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc" | tee -a "$LOG"
  [ "$rc" -ne 0 ] && [ "$STATUS" -eq 0 ] && STATUS=$rc
  return 0
}

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
step correctness 120 "$PYTHON" -m pytest --framework torch --device gpu -p no:cacheprovider -q \
  suites/test_shapes.py suites/test_gradients.py suites/test_models.py suites/test_training.py \
  --junitxml="$OUT/correctness.xml"

if [ -f .gpu-data/cifar10-jpeg.npz ]; then
  step unpack 60 "$PYTHON" scripts/pack_images.py unpack .gpu-data/cifar10-jpeg.npz /tmp/cifar10-jpeg
  step recipes 180 "$PYTHON" scripts/gpu_recipes.py --data /tmp/cifar10-jpeg \
    --results "$OUT/recipes" --eager keras_cnn_adam
else
  echo "== recipes: skipped, .gpu-data/cifar10-jpeg.npz was not carried" | tee -a "$LOG"
fi

BUDGET_S=270 OUT="$OUT/bench" step throughput 290 bash scripts/gpu_bench.sh

# The device tool brings back at most 8 files: keep the logs and the reports loose, pack the
# result rows (one file each) into one archive.
cp "$OUT/bench/report.md" "$OUT/bench-report.md" 2>/dev/null
tar czf "$OUT/results.tar.gz" -C "$OUT" $(cd "$OUT" && ls -d recipes bench 2>/dev/null) \
  && rm -rf "$OUT/recipes" "$OUT/bench"
ls -la "$OUT" | tee -a "$LOG"
exit "$STATUS"
