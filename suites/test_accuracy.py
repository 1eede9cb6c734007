"""The headline use, `pytest -m accuracy`: the reference programs reproduced, and the
twins' own recipes, gated.

keras_cnn_adam runs in TensorFlow and lenet_sgd in torch, as published; resnet8_short, which
reproduces no program, in both (Recipe.gated_in). With --arm, every recipe gated in
TensorFlow also runs on that Keras backend (ids like keras-torch-keras_cnn_adam-cpu-seed0),
gated with the same threshold: the same Keras program, proven the same function by
suites/test_keras_backends.py (docs/methodology.md#keras-backends). Each trains on the full
50,000 training images and is judged, as the reference programs are, on its final-epoch test
accuracy.
Thresholds come from one table keyed by the data source (twinbench/thresholds.py). A recipe
with no threshold for the data source still trains and writes its row (the measurement a
threshold is derived from), then fails, naming what is missing.

Every seed is its own test item (ids like tf-keras_cnn_adam-cpu-seed3), so `-n N` or remote
xdist workers train seeds in parallel. The gate is over a recipe's seeds (with --seeds N >= 3,
on mean - K_STD * std), so it is decided once every seed's row exists, at the end of the
session (fixtures/cells.py): the verdict is printed, written beside the rows, and fails the
session; a seed without a row is named there, never left out.
"""
from __future__ import annotations

import pytest

from fixtures import cells
from fixtures.frameworks import adapter
from twinbench import thresholds
from twinbench.recipes import RECIPES
from twinbench.train import train

pytestmark = pytest.mark.accuracy


def test_reference_recipe_reaches_threshold(accuracy_run, load_split, data_source, results,
                                            progress, record_property):
    recipe = RECIPES[accuracy_run.recipe]
    # A Keras-backend arm (--arm) skips here, with the reason, where it cannot run.
    framework = adapter(accuracy_run.framework, accuracy_run.device)
    try:
        gate, missing = thresholds.threshold(data_source.name, recipe.name), None
    except thresholds.NoThreshold as exc:
        gate, missing = None, f"saw data source {data_source.name!r} at {data_source.path}: {exc}"
        progress(f"{missing}: training anyway, to measure; this run will fail")

    train_set, test_set = load_split("trainval"), load_split("test")
    run = train(framework, recipe, train_set, test_set, seed=accuracy_run.seed, threshold=gate,
                progress=progress)
    results.write(run.row(len(train_set.labels), data_source))
    record_property("final_accuracy", run.final_accuracy)
    low, high = thresholds.wilson_interval(run.final_accuracy, len(test_set.labels))
    summary = (f"{accuracy_run.framework}/{recipe.name} seed {accuracy_run.seed}: final test "
               f"accuracy {run.final_accuracy:.2%} (95% interval {low:.2%}-{high:.2%}), "
               f"{run.train_seconds:,.0f} s of training, "
               f"{run.images_per_s(len(train_set.labels)):,.0f} img/s; gated with the other "
               f"seeds at the end of the session (threshold "
               f"{'none' if gate is None else f'{gate:.1%}'})")
    progress(summary)
    cells.assert_learned(run.final_accuracy, summary)
    if missing:
        pytest.fail(f"{missing} (the row is written: {summary})")
