"""The fair comparison the reference programs could not make: the same network, the same
recipe, the same initial weights (Keras's initializer, copied across) and the same data order
per epoch, in both frameworks. Run with `pytest -m matrix` (8 runs of 10 epochs per seed:
hours on a CPU, minutes on a GPU); select with --arch / --recipe / --seeds.

Every run is its own test item (ids like keras_cnn-lenet_sgd-torch-cpu-seed3): one framework,
one seed, starting from a copy of the Keras initial weights of that seed, so xdist workers and
hosts can train them in parallel. The verdict asserts equivalence: the final-accuracy gap
between the frameworks over the paired seeds stays within what reseeding alone produces
(twinbench/thresholds.py: matrix_gap_bound and its derivation). It is decided once every run
of the cell has its row, at the end of the session (fixtures/cells.py), which also checks that
both twins of a seed started from the same weights and names any run without a row.

With --arm, each Keras-backend arm trains every cell too, from the same Keras initial weights
and data order (ids like keras_cnn-keras_cnn_adam-keras-torch-cpu-seed0). Its runs are a cell
of their own (twinbench/cells.py: every seed has a row, from TensorFlow's weights); the
TensorFlow-vs-torch verdict is unchanged, and the report splits its gap into runtime and API
with them (reports/runtime_api.py, docs/methodology.md#keras-backends).
"""
from __future__ import annotations

import dataclasses

import pytest

import models
from fixtures import cells
from fixtures.frameworks import adapter
from twinbench.recipes import RECIPES
from twinbench.train import train

pytestmark = [pytest.mark.matrix, pytest.mark.slow]


def test_frameworks_reach_the_same_accuracy(matrix_run, load_split, data_source, results,
                                            progress, record_property):
    arch = models.get(matrix_run.arch)
    # A Keras-backend arm (--arm) skips here, with the reason, where it cannot run.
    framework = adapter(matrix_run.framework, matrix_run.device)
    keras = adapter("tf", matrix_run.device)
    recipe = dataclasses.replace(RECIPES[matrix_run.recipe], arch=arch.name)
    train_set, test_set = load_split("trainval"), load_split("test")
    # Keras's initializer makes the starting point; both twins' items start from a copy of it
    # (the verdict checks that their rows record the same weights digest).
    initial = keras.get_weights(keras.build(arch, seed=matrix_run.seed))
    run = train(framework, recipe, train_set, test_set, seed=matrix_run.seed,
                initial_weights=initial, progress=progress)
    row = run.row(len(train_set.labels), data_source)
    row["comparison"] = "matrix"
    results.write(row)
    record_property("final_accuracy", run.final_accuracy)
    summary = (f"matrix {arch.name}/{recipe.name} {matrix_run.framework} seed {matrix_run.seed}: "
               f"final test accuracy {run.final_accuracy:.2%}; compared at the end of the session")
    progress(summary)
    cells.assert_learned(run.final_accuracy, summary)
