"""Targets for suites/test_xdist.py: tests that mean something only inside the pytest sessions
it starts (xdist gateways with other working directories, an ssh worker, shards). Not named
test_*.py, so only those sessions collect it (`-o testpaths=suites/xdist_targets.py`); the mode
in TWINBENCH_XDIST_TARGETS says which targets do what; run without it, they skip."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from fixtures.robust import throughput_fields
from fixtures.session import settings
from twinbench.train import Epoch, Run

MODE = os.environ.get("TWINBENCH_XDIST_TARGETS")
if not MODE:
    pytest.skip("targets of suites/test_xdist.py, run only in its child sessions "
                "(TWINBENCH_XDIST_TARGETS unset)", allow_module_level=True)

WRITERS = 4            # test items writing rows, spread over the workers
ROWS_PER_WRITER = 5
# Fake final accuracies by framework and seed for the accuracy cells (mode "cells": the gates
# pass, 0.61 - 0.01 >= 0.58 for lenet_sgd; "cells-low": every run under its threshold).
# CRASH: in mode "cells-crash", the run whose worker dies mid-test (os._exit), as an
# out-of-memory kill would end it.
ACCURACIES = {"cells": {"tf": (0.70, 0.71, 0.69), "torch": (0.61, 0.62, 0.60)},
              "cells-low": {"tf": (0.50, 0.51, 0.49), "torch": (0.50, 0.51, 0.49)}}
CRASH = ("torch", 1)
FAKE_DATA = SimpleNamespace(name="cifar10-jpeg", digest="synthetic")


@pytest.mark.parametrize("writer", range(WRITERS))
def test_rows_travel_home(writer, request, results):
    framework_name = settings(request.config).frameworks[0]
    for seq in range(ROWS_PER_WRITER):
        results.write(throughput_fields(framework_name, "lenet", 1000.0 + seq, writer=writer,
                                        seq=seq, cwd=os.getcwd()))


@pytest.mark.benchmark
def test_lone_worker_measures(benchmark, results, request):
    """On a worker alone on its host pytest-benchmark must measure (fixtures/workers.py)."""
    benchmark.pedantic(sum, args=(range(1000),), rounds=3)
    framework_name = settings(request.config).frameworks[0]
    results.write(throughput_fields(framework_name, "lenet", 1000.0, writer="benchmark",
                                    benchmark_disabled=benchmark.disabled, cwd=os.getcwd()))
    assert not benchmark.disabled


def test_fake_training(accuracy_run, results, progress):
    """Stands for one accuracy run: a progress line and a row with a fixed final accuracy,
    or a crash."""
    if (accuracy_run.framework, accuracy_run.seed) == CRASH and MODE == "cells-crash":
        os._exit(3)
    progress(f"fake run {accuracy_run.framework}/{accuracy_run.recipe} seed {accuracy_run.seed}")
    accuracies = ACCURACIES["cells" if MODE == "cells-crash" else MODE][accuracy_run.framework]
    r = accuracy_run
    run = Run(r.framework, r.device, r.arch, r.recipe, r.seed,
              epochs=[Epoch(1, 1.0, accuracies[r.seed], 1.0)], initial_weights="synthetic")
    results.write(run.row(50_000, FAKE_DATA))
