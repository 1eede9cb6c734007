"""Hooks only: options, framework import order, session checks and the report header.

Fixtures live in fixtures/ (registered below); suites never import a framework.
"""
from __future__ import annotations

import argparse
import os

# Import order is not style: TensorFlow before torch or torchvision segfaults the process
# (docs/methodology.md#import-order). This must run before anything below can import TensorFlow.
from twinbench import imports, workers

workers.pin_gpu()   # an xdist worker's one GPU, before any framework can initialise CUDA
imports.preload()

import pytest  # noqa: E402

import models  # noqa: E402
from twinbench.frameworks import DEVICES  # noqa: E402
from twinbench.frameworks.keras_backends import ARMS  # noqa: E402  (imports no framework)
from twinbench.imports import FRAMEWORKS  # noqa: E402
from twinbench.recipes import RECIPES  # noqa: E402

pytest_plugins = ["fixtures.session", "fixtures.frameworks", "fixtures.data", "fixtures.results",
                  "fixtures.benchmarks", "fixtures.cells", "fixtures.workers", "fixtures.shards"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _data_path(text: str) -> str:
    # Full validation (layout, checksums, counts) happens in pytest_configure; this catches
    # the mistakes that need no reading of the data at all.
    if os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text} is a file; --data takes a directory holding "
                                         "cifar-10-batches-py or an image folder (train/, test/)")
    return text


def pytest_addoption(parser):
    group = parser.getgroup("twinbench")
    group.addoption("--framework", action="append", choices=FRAMEWORKS,
                    help="framework(s) to run; repeat for several (default: both; one that is "
                         "not installed is skipped with the reason)")
    group.addoption("--device", action="append", choices=DEVICES,
                    help="device(s) to run on; repeat for several (default: cpu and gpu, the gpu "
                         "tests skipping with the reason where no GPU is visible)")
    group.addoption("--arm", action="append", choices=tuple(ARMS),
                    help="accuracy, matrix, benchmark: also run the Keras twins on this Keras 3 "
                         "backend, in a worker process (repeatable; default: none, since each arm "
                         "adds a training run per recipe and seed, slower than TensorFlow's on a "
                         "CPU: docs/methodology.md#keras-backends)")
    group.addoption("--arch", action="append", choices=tuple(models.ARCHITECTURES),
                    help="architecture(s) to run (default: every registered twin)")
    group.addoption("--recipe", action="append", choices=tuple(RECIPES),
                    help="accuracy: recipe(s) to train (default: every registered recipe)")
    group.addoption("--data", type=_data_path, default=os.environ.get("TWINBENCH_DATA"),
                    metavar="PATH",
                    help="CIFAR-10 location: a canonical cifar-10-batches-py folder or an image "
                         "folder (train/<class>/*, test/<class>/*). Env: TWINBENCH_DATA. Default: "
                         "the canonical release, downloaded and md5-verified on first use")
    group.addoption("--results", metavar="DIR", default=None,
                    help="where result rows (JSON) are written (default: reports/results/<run id>)")
    group.addoption("--seeds", type=_positive_int, default=1, metavar="N",
                    help="accuracy and matrix: seeds 0..N-1 per cell, one test item each; the gate and the matrix verdict are decided over all of them (default: 1)")
    group.addoption("--batch-size", type=_positive_int, action="append", metavar="N",
                    help="benchmark: batch size(s) to measure (default: per device)")
    group.addoption("--quick", action="store_true",
                    help="benchmark: one batch size and few rounds (a few minutes on a 2-core CPU)")
    group.addoption("--threads", type=_positive_int, default=None, metavar="N",
                    help="CPU threads for both frameworks, pinned equal (default: the usable "
                         "cores, divided between the xdist workers on this host)")
    group.addoption("--determinism", action="store_true",
                    help="seeded, deterministic kernels in both frameworks (recorded in results)")


def pytest_configure(config):
    from fixtures import session
    session.configure(config)


def pytest_report_header(config):
    from fixtures import session
    return session.report_header(config)


def pytest_generate_tests(metafunc):
    from fixtures import session
    session.parametrize(metafunc)


@pytest.hookimpl(optionalhook=True)   # a pytest-benchmark hook: optional without the plugin
def pytest_benchmark_update_machine_info(config, machine_info):
    from fixtures import benchmarks
    benchmarks.update_machine_info(config, machine_info)


def pytest_terminal_summary(terminalreporter, config):
    from fixtures import results
    results.terminal_summary(terminalreporter, config)
