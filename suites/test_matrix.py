"""The fair comparison the reference programs could not make: the same network, the same
recipe, the same initial weights (Keras's initializer, copied across) and the same data order
per epoch, in both frameworks. Run with `pytest -m matrix` (about 8 runs of 10 epochs each:
hours on a CPU, minutes on a GPU); select with --arch / --recipe.

It asserts equivalence: the final-accuracy gap between the frameworks stays within what
reseeding alone produces (twinbench/thresholds.py: matrix_gap_bound and its derivation).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fixtures.session import settings
from twinbench import thresholds
from twinbench.recipes import RECIPES
from twinbench.train import train

pytestmark = [pytest.mark.matrix, pytest.mark.slow]


@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_frameworks_reach_the_same_accuracy(arch, recipe_name, twins, request, load_split,
                                            data_source, results, progress, record_property):
    s = settings(request.config)
    if recipe_name not in s.recipes:
        pytest.skip(f"not selected: --recipe {', '.join(s.recipes)}")
    recipe = dataclasses.replace(RECIPES[recipe_name], arch=arch.name)
    train_set, test_set = load_split("trainval"), load_split("test")
    tf_fw, torch_fw = twins

    final = {"tf": [], "torch": []}
    for seed in range(s.seeds):
        # Keras's initializer makes the starting point; both twins start from a copy of it.
        initial = tf_fw.get_weights(tf_fw.build(arch, seed=seed))
        per_epoch = {}
        for fw in (tf_fw, torch_fw):
            run = train(fw, recipe, train_set, test_set, seed=seed, initial_weights=initial,
                        progress=progress)
            row = run.row(len(train_set.labels), data_source)
            row["comparison"] = "matrix"
            results.write(row)
            final[fw.name].append(run.final_accuracy)
            per_epoch[fw.name] = [e.test_accuracy for e in run.epochs]
        for epoch, (a, b) in enumerate(zip(per_epoch["tf"], per_epoch["torch"]), start=1):
            progress(f"matrix {arch.name}/{recipe_name} seed {seed} epoch {epoch}: "
                     f"tf {a:.2%}  torch {b:.2%}  tf-torch {a - b:+.2%}")

    gap = float(np.mean(final["tf"]) - np.mean(final["torch"]))
    bound = thresholds.matrix_gap_bound(s.seeds)
    record_property("gap_tf_minus_torch", gap)
    record_property("bound", bound)
    message = (f"{arch.name}/{recipe_name}: final accuracy tf {np.mean(final['tf']):.2%}, "
               f"torch {np.mean(final['torch']):.2%}, gap {gap:+.2%}; equivalence bound "
               f"+-{bound:.2%} ({thresholds.MATRIX_K:g} x sqrt(2/{s.seeds}) x seed std "
               f"{thresholds.SEED_STD:.1%})")
    progress(message)
    assert abs(gap) <= bound, message
