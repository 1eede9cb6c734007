"""The headline use, `pytest -m accuracy`: the two reference programs, reproduced and gated.

keras_cnn_adam runs in TensorFlow and lenet_sgd in torch, as published; each trains on the
full 50,000 training images and is judged, as the reference programs are, on its final-epoch
test accuracy. Thresholds come from one table keyed by the data source
(twinbench/thresholds.py). With --seeds N >= 3 the gate is on mean - K_STD * std.
"""
from __future__ import annotations

import pytest

from fixtures.frameworks import adapter
from fixtures.session import settings
from twinbench import thresholds
from twinbench.recipes import RECIPES
from twinbench.train import train

pytestmark = pytest.mark.accuracy

REFERENCE_PAIR = [pytest.param(("tf", "keras_cnn_adam"), id="tf-keras_cnn_adam"),
                  pytest.param(("torch", "lenet_sgd"), id="torch-lenet_sgd")]


@pytest.mark.parametrize("reference", REFERENCE_PAIR)
def test_reference_recipe_reaches_threshold(reference, device, request, load_split, data_source,
                                            results, progress, record_property):
    framework_name, recipe_name = reference
    s = settings(request.config)
    if framework_name not in s.frameworks or recipe_name not in s.recipes:
        pytest.skip(f"not selected: --framework {', '.join(s.frameworks)}, "
                    f"--recipe {', '.join(s.recipes)}")
    framework = adapter(framework_name, device)
    recipe = RECIPES[recipe_name]
    try:
        gate = thresholds.threshold(data_source.name, recipe.name)
    except thresholds.NoThreshold as exc:
        pytest.fail(f"saw data source {data_source.name!r} at {data_source.path}: {exc}")

    train_set, test_set = load_split("trainval"), load_split("test")
    accuracies = []
    for seed in range(s.seeds):
        run = train(framework, recipe, train_set, test_set, seed=seed, threshold=gate,
                    progress=progress)
        results.write(run.row(len(train_set.labels), data_source))
        accuracies.append(run.final_accuracy)
        low, high = thresholds.wilson_interval(run.final_accuracy, len(test_set.labels))
        progress(f"{framework_name}/{recipe.name} seed {seed}: final test accuracy "
                 f"{run.final_accuracy:.2%} (95% interval {low:.2%}-{high:.2%}), "
                 f"{run.train_seconds:,.0f} s of training, "
                 f"{run.images_per_s(len(train_set.labels)):,.0f} img/s")

    stats = thresholds.summarize(accuracies)
    for key, value in stats.items():
        record_property(key, value)
    spread = (f"mean {stats['mean']:.2%}, std {stats['std']:.2%}, "
              if stats["std"] is not None else "")
    summary = (f"{framework_name}/{recipe.name} on {data_source.name}: {stats['n']} run(s), "
               f"{spread}min {stats['min']:.2%}, max {stats['max']:.2%}; gate "
               f"{stats['gate_rule']} = {stats['gated_value']:.2%} vs threshold {gate:.0%}")
    progress(summary)
    assert stats["gated_value"] >= gate, summary
