"""Targets for suites/test_robustness.py: tests that mean something only inside the pytest
subprocesses it starts (TensorFlow imported first, four xdist workers, --determinism, options
that must stop the session before any test runs). Each leaves what it saw in the directory
named by TWINBENCH_ROBUSTNESS_OUT; run without it, they skip with the reason."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures.robust import TARGETS_ENV, deterministic_ops, throughput_fields
from fixtures.session import settings
from twinbench.recipes import RECIPES

OUT = os.environ.get(TARGETS_ENV)
if not OUT:
    pytest.skip(f"targets of suites/test_robustness.py, run only in its subprocesses "
                f"({TARGETS_ENV} unset)", allow_module_level=True)

WRITERS = 4            # one test per xdist worker
ROWS_PER_WRITER = 10   # 40 rows in all, written at the same time
SEED = 7
STEPS = 3              # training steps before the weights are compared across processes
BATCH = 8


def mark_ran(request) -> None:
    """Leave proof that this test body ran (a run stopped by a usage error leaves none)."""
    ran = Path(OUT) / "ran"
    ran.mkdir(parents=True, exist_ok=True)
    (ran / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)).touch()


@pytest.mark.parametrize("writer", range(WRITERS))
def test_rows_written_concurrently(writer, request, results):
    mark_ran(request)
    framework_name = settings(request.config).frameworks[0]   # the session's (--framework)
    for seq in range(ROWS_PER_WRITER):
        results.write(throughput_fields(framework_name, "lenet", 1000.0 + seq, writer=writer,
                                        seq=seq, pid=os.getpid()))


def test_train_steps(framework, arch, request, results):
    """A few seeded training steps through the adapter; the weights go to OUT, to be compared
    byte for byte with another process's."""
    mark_ran(request)
    recipe = RECIPES["lenet_sgd"]
    rng = np.random.default_rng(SEED)
    images = recipe.prepare(rng.integers(0, 256, size=(STEPS * BATCH, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, size=STEPS * BATCH).astype(np.int64)
    model = framework.build(arch, seed=SEED)
    initial = framework.get_weights(model)
    optimizer = framework.make_optimizer(model, recipe)
    t0 = time.perf_counter()
    for step in range(STEPS):
        part = slice(step * BATCH, (step + 1) * BATCH)
        framework.train_step(model, optimizer, images[part], labels[part])
    framework.synchronize()
    seconds = time.perf_counter() - t0
    out = Path(OUT)
    np.savez(out / f"weights-{framework.name}-{arch.name}.npz", **framework.get_weights(model))
    np.savez(out / f"initial-{framework.name}-{arch.name}.npz", **initial)
    seen = {"deterministic_ops": deterministic_ops(framework.name),
            "determinism_option": settings(request.config).determinism}
    (out / f"flags-{framework.name}.json").write_text(json.dumps(seen))
    results.write(throughput_fields(framework.name, arch.name, STEPS * BATCH / seconds))


@pytest.mark.accuracy
def test_accuracy_tier(request):
    """Stands for a long accuracy run: `-m accuracy` with a bad --results must never get here."""
    mark_ran(request)
