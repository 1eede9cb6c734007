"""The recipe training loop (twinbench/train.py) on tiny synthetic data, in the fast tier:
what `pytest -m accuracy` and the matrix rely on, checked without the minutes of training.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

import models
from twinbench.agreement import compare
from twinbench.recipes import RECIPES
from twinbench.results import validate_row
from twinbench.tolerances import Tolerance, parity
from twinbench.train import epoch_order, train

# 16 batches of lenet_sgd's batch size 4 (plus a partial one: 66 is not a multiple of 4).
N_TRAIN, N_TEST = 66, 40


def tiny_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                           labels=rng.integers(0, 10, n).astype(np.int64))


def tiny_recipe(name: str, epochs: int = 2):
    return dataclasses.replace(RECIPES[name], epochs=epochs)


def test_epoch_order_is_a_shared_permutation_that_changes_each_epoch():
    a, b = epoch_order(3, 1, 1000), epoch_order(3, 1, 1000)
    np.testing.assert_array_equal(a, b)                      # same seed, same epoch: same order
    assert sorted(a.tolist()) == list(range(1000))           # a permutation: every image once
    assert not np.array_equal(a, epoch_order(3, 2, 1000))    # a new order every epoch
    assert not np.array_equal(a, epoch_order(4, 1, 1000))    # and per seed
    np.testing.assert_array_equal(epoch_order(3, 1, 10, shuffle=False), np.arange(10))


@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_training_run_records_every_epoch_and_a_valid_row(framework, recipe_name, results):
    recipe = tiny_recipe(recipe_name)
    train_set, test_set = tiny_split(N_TRAIN, 0), tiny_split(N_TEST, 1)
    run = train(framework, recipe, train_set, test_set, seed=0, threshold=0.0)
    assert [e.epoch for e in run.epochs] == [1, 2]
    assert all(np.isfinite(e.loss) and 0.0 <= e.test_accuracy <= 1.0 for e in run.epochs)
    # Accuracy is a count of correct test images over N_TEST, not an approximation.
    assert all(round(e.test_accuracy * N_TEST) == pytest.approx(e.test_accuracy * N_TEST)
               for e in run.epochs)
    assert run.time_to_threshold_s == pytest.approx(run.epochs[0].seconds)  # 0% is met at once
    source = SimpleNamespace(name="synthetic", digest="0" * 64)
    row = {**results.common(), **run.row(N_TRAIN, source)}
    validate_row(row)
    assert row["images_per_s"] == pytest.approx(N_TRAIN * 2 / run.train_seconds)


def test_time_to_threshold_is_none_when_never_reached(framework):
    run = train(framework, tiny_recipe("lenet_sgd", epochs=1), tiny_split(N_TRAIN, 0),
                tiny_split(N_TEST, 1), seed=0, threshold=1.01)
    assert run.time_to_threshold_s is None


def test_one_epoch_of_sgd_matches_across_frameworks(twins, device):
    """The matrix in miniature: the same initial weights and data order give the same weights
    after an epoch of lenet_sgd (17 steps, the last one partial) in both frameworks."""
    tf_fw, torch_fw = twins
    recipe = tiny_recipe("lenet_sgd", epochs=1)
    arch = models.get(recipe.arch)
    split = tiny_split(N_TRAIN, 0)
    initial = tf_fw.get_weights(tf_fw.build(arch, seed=0))
    order = epoch_order(0, 1, N_TRAIN)
    after = {}
    for fw in (tf_fw, torch_fw):
        model = fw.build(arch, seed=1)
        fw.set_weights(model, initial)
        with fw.recipe_settings(recipe):
            data = fw.prepare_data(model, recipe.prepare(split.images), split.labels)
            fw.fit_epoch(model, fw.make_optimizer(model, recipe), data, recipe.batch_size, order)
        after[fw.name] = {k: v - initial[k] for k, v in fw.get_weights(model).items()}
    compare(after["torch"], after["tf"], parity(device).sgd_displacement(),
            what="displacement after one epoch of lenet_sgd, torch vs tf")


@pytest.mark.gpu
@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_cuda_graph_epoch_matches_the_eager_epoch(recipe_name, torch_gpu):
    """On a GPU, torch's fit_epoch replays many steps per CUDA graph: it must take the same
    steps as the eager loop (warm-up undone, remainder batches run eagerly). CUDA graphs
    exist on a GPU only, so there is no CPU case."""
    torch_fw, device = torch_gpu, "gpu"
    recipe = tiny_recipe(recipe_name, epochs=1)
    arch = models.get(recipe.arch)
    split = tiny_split(1000, 0)
    order = epoch_order(0, 1, len(split.labels))
    weights, losses = {}, {}
    for steps in (0, 8):     # 0: eager; 8 steps per graph leaves a remainder to run eagerly
        torch_fw.graph_steps = steps
        try:
            model = torch_fw.build(arch, seed=0)
            data = torch_fw.prepare_data(model, recipe.prepare(split.images), split.labels)
            losses[steps] = torch_fw.fit_epoch(model, torch_fw.make_optimizer(model, recipe),
                                               data, recipe.batch_size, order)
            weights[steps] = torch_fw.get_weights(model)
        finally:
            torch_fw.graph_steps = type(torch_fw).graph_steps
    initial = torch_fw.get_weights(torch_fw.build(arch, seed=0))
    bounds = parity(device)
    steps_taken = -(-len(order) // recipe.batch_size)
    tol = (bounds.sgd_displacement() if recipe.optimizer == "sgd" else
           Tolerance(atol=bounds.adam_step_fraction * recipe.lr * steps_taken))
    compare({k: v - initial[k] for k, v in weights[8].items()},
            {k: v - initial[k] for k, v in weights[0].items()},
            tol, what="graphed vs eager epoch")
    assert losses[8] == pytest.approx(losses[0], rel=1e-3)


def test_fit_epoch_trains_in_exactly_the_given_order(framework):
    """fit_epoch must follow the order it is given, step by step: the matrix's shared data
    order depends on it, and a loop that reshuffles (or, like Keras 3's seeded fit on NumPy
    arrays, replays one permutation every epoch) would break it silently."""
    recipe = tiny_recipe("lenet_sgd", epochs=1)
    arch = models.get(recipe.arch)
    split = tiny_split(N_TRAIN, 0)
    images = recipe.prepare(split.images)
    order = epoch_order(0, 1, N_TRAIN)

    def fitted(order):
        model = framework.build(arch, seed=0)
        with framework.recipe_settings(recipe):
            data = framework.prepare_data(model, images, split.labels)
            framework.fit_epoch(model, framework.make_optimizer(model, recipe), data,
                                recipe.batch_size, order)
        return framework.get_weights(model)

    model = framework.build(arch, seed=0)
    optimizer = framework.make_optimizer(model, recipe)
    with framework.recipe_settings(recipe):
        for start in range(0, N_TRAIN, recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            framework.train_step(model, optimizer, images[batch], split.labels[batch])
    stepwise = framework.get_weights(model)
    initial = framework.get_weights(framework.build(arch, seed=0))
    displacement = {k: v - initial[k] for k, v in stepwise.items()}
    compare({k: v - initial[k] for k, v in fitted(order).items()}, displacement,
            parity(framework.device).sgd_displacement(), what="fit_epoch vs train_step loop")
    with pytest.raises(AssertionError):    # another order must give other weights
        compare({k: v - initial[k] for k, v in fitted(order[::-1].copy()).items()},
                displacement, parity(framework.device).sgd_displacement(), what="reversed order")
