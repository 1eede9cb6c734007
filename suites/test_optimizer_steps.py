"""One recipe means one optimizer: 1 and 10 steps of the recipes' SGD and Adam leave the twins
with the same weights and the same loss trajectory, on both architectures.

SGD is lenet_sgd's (lr 1e-3, momentum 0.9), Adam is keras_cnn_adam's (lr 1e-3, Keras's
epsilon 1e-7 in its placement; torch runs the adapter's KerasAdam); dataclasses.replace puts
each on each architecture. Both twins start from the tf twin's initial weights and see the
same ten batches in the same order.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from twinbench import tolerances
from twinbench.frameworks import faults
from twinbench.agreement import compare, report
from twinbench.recipes import RECIPES
from twinbench.tolerances import Tolerance, parity

STEPS = 10
CHECKPOINTS = (1, STEPS)
BATCH = 16
OPTIMIZERS = {"sgd": "lenet_sgd", "adam": "keras_cnn_adam"}


def recipe_for(arch, optimizer: str):
    base = RECIPES[OPTIMIZERS[optimizer]]
    return replace(base, name=f"{arch.name}_{optimizer}", arch=arch.name)


def batches(recipe):
    rng = np.random.default_rng(0)
    return [(recipe.prepare(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)),
             rng.integers(0, 10, BATCH)) for _ in range(STEPS)]


def run(framework, model, optimizer, data):
    """Train on `data` in order: (losses per step, {checkpoint: weights after that step})."""
    losses, weights = [], {}
    for step, (images, labels) in enumerate(data, start=1):
        losses.append(framework.train_step(model, optimizer, images, labels))
        if step in CHECKPOINTS:
            weights[step] = {k: v.copy() for k, v in framework.get_weights(model).items()}
    return losses, weights


@pytest.fixture(scope="module")
def trajectories(twins):
    """(arch, optimizer) -> both twins' runs, each computed once per module."""
    tf, torch = twins
    cache = {}

    def get(arch, optimizer):
        key = (arch.name, optimizer)
        if key not in cache:
            recipe = recipe_for(arch, optimizer)
            tf_model, torch_model = tf.build(arch, seed=0), torch.build(arch, seed=1)
            initial = {k: v.copy() for k, v in tf.get_weights(tf_model).items()}
            torch.set_weights(torch_model, initial)
            data = batches(recipe)
            cache[key] = dict(
                recipe=recipe, initial=initial, data=data,
                tf=run(tf, tf_model, tf.make_optimizer(tf_model, recipe), data),
                torch=run(torch, torch_model, torch.make_optimizer(torch_model, recipe), data))
            if arch.batchnorm:    # the float64 twins: twinbench/tolerances.py's BatchNorm policy
                data64 = [(x.astype(np.float64), y) for x, y in data]
                for fw in twins:
                    model = fw.build(arch, seed=0, dtype="float64")
                    fw.set_weights(model, {k: v.astype(np.float64) for k, v in initial.items()})
                    cache[key][fw.name + "64"] = run(fw, model, fw.make_optimizer(model, recipe),
                                                     data64)
        return cache[key]
    return get


def displacement(weights, initial):
    """w_n - w_0, exact (in float64)."""
    return {k: weights[k].astype(np.float64) - initial[k] for k in initial}


def check_weights(device, recipe, initial, steps, actual, expected, what):
    """Compare weights after `steps` steps as displacements from the shared initial weights,
    with the bound that fits the optimizer (twinbench/tolerances.py)."""
    tol = parity(device)
    rounding = {k: steps * tol.weight_rounding_per_step
                * max(np.abs(initial[k]).max(), np.abs(expected[k]).max()) for k in initial}
    if recipe.optimizer == "adam":
        bound = steps * tol.adam_step_fraction * recipe.lr
        return compare(displacement(actual, initial), displacement(expected, initial),
                       Tolerance(), what=what,
                       floor={k: r + bound for k, r in rounding.items()})
    return compare(displacement(actual, initial), displacement(expected, initial),
                   tol.sgd_displacement(), what=what, floor=rounding)


def check_batchnorm_weights(run_, steps, what, other: str = "torch"):
    """With BatchNorm in training mode: the float32 displacements within each framework's own
    float32 error against its float64 run (tolerances.batchnorm_float32_floors), plus one
    rounding of the weights per step. `other`: the run compared with TensorFlow's (the Keras-
    backend arms' suite passes its own)."""
    initial = run_["initial"]
    disp = {name: displacement(run_[name][1][steps], initial)
            for name in ("tf", "tf64", other, other + "64")}
    scale = max(np.abs(d).max() for d in disp["tf64"].values())
    floors = tolerances.batchnorm_float32_floors(disp["tf"], disp["tf64"], disp[other],
                                                 disp[other + "64"], scale)
    rounding = {k: steps * tolerances.WEIGHT_ROUNDING_PER_STEP * np.abs(initial[k]).max()
                for k in initial}
    return compare(disp[other], disp["tf"], tolerances.EXACT, what=what,
                   floor={k: floors[k] + rounding[k] for k in initial})


@pytest.mark.parametrize("steps", CHECKPOINTS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_weights_after_steps(trajectories, device, arch, optimizer, steps, record_property):
    run_ = trajectories(arch, optimizer)
    what = f"{arch.name} {optimizer}: weights after {steps} step(s), torch vs tf"
    if arch.batchnorm:
        errors = check_batchnorm_weights(run_, steps, what)
    else:
        errors = check_weights(device, run_["recipe"], run_["initial"], steps,
                               run_["torch"][1][steps], run_["tf"][1][steps], what=what)
    report(errors, f"{optimizer} {device}-{arch.name} weights after {steps} step(s)",
           record_property)


@pytest.mark.parametrize("steps", CHECKPOINTS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_float64_weights_after_steps(trajectories, arch, optimizer, steps, record_property):
    """With BatchNorm in training mode the float32 bound rests on the float64 twins agreeing
    (twinbench/tolerances.py): their displacements within FLOAT64_TWINS, plus one float64
    rounding of the weights per step and the float64 floor of the gradients BatchNorm
    cancels, carried through the step (float64_step_floor)."""
    if not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: float32 has its derived bounds")
    run_ = trajectories(arch, optimizer)
    errors = check_float64_weights(run_, steps, run_["torch64"][1][steps],
                                   what=f"{arch.name} {optimizer}: float64 weights after "
                                        f"{steps} step(s), torch vs tf")
    report(errors, f"{optimizer} {arch.name} float64 weights after {steps} step(s)",
           record_property)


def check_float64_weights(run_, steps, actual, what):
    """float64 displacements against TensorFlow's: FLOAT64_TWINS plus SGD's momentum
    coefficient, which Keras on TensorFlow rounds to float32 (float64_momentum_rounding), and
    the floors of float64_step_floor and one float64 rounding of the weights per step."""
    initial, recipe = run_["initial"], run_["recipe"]
    expected = displacement(run_["tf64"][1][steps], initial)
    floor = tolerances.float64_step_floor(recipe, steps, max(np.abs(d).max()
                                                             for d in expected.values()))
    tol = replace(tolerances.FLOAT64_TWINS, scaled=tolerances.FLOAT64_TWINS.scaled
                  + tolerances.float64_momentum_rounding(recipe, steps))
    return compare(displacement(actual, initial), expected, tol, what=what,
                   floor={k: floor + steps * tolerances.EPS64 * np.abs(initial[k]).max()
                          for k in initial})


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_loss_trajectory(trajectories, device, arch, optimizer, record_property):
    """The loss of step k is computed on weights that k-1 steps have rounded apart: step 1 gets
    the forward-pass bound, each further step adds one forward pass's worth."""
    run_ = trajectories(arch, optimizer)
    check_loss_trajectory(run_["tf"][0], run_["torch"][0], "torch", arch, optimizer, device,
                          record_property)


def check_loss_trajectory(tf_losses, other_losses, other: str, arch, optimizer: str,
                          device: str, record_property) -> None:
    """Per-step losses of `other` against TensorFlow's: step 1 within the loss bound, each
    further step one forward pass's drift more (shared with the Keras-backend arms)."""
    tol = parity(device)
    names = [f"step {k}" for k in range(1, STEPS + 1)]
    errors = compare(dict(zip(names, np.array(other_losses)[:, None])),
                     dict(zip(names, np.array(tf_losses)[:, None])), tol.loss,
                     what=f"{arch.name} {optimizer}: loss trajectory, {other} vs tf",
                     floor={n: k * tol.loss_drift_per_step() * abs(tf_losses[k])
                            for k, n in enumerate(names)})
    report(errors, f"{other} {optimizer} {device}-{arch.name} losses", record_property)


def test_steps_catch_torch_default_adam(trajectories, twins, device, arch):
    """torch.optim.Adam's own epsilon (1e-8, added to sqrt(v_hat)) instead of Keras's: one
    step already leaves the twins apart by far more than the Adam bound."""
    _, torch = twins
    run_ = trajectories(arch, "adam")
    model = torch.build(arch, seed=1)
    torch.set_weights(model, run_["initial"])
    losses, weights = run(torch, model, faults.torch_default_adam(model, run_["recipe"]),
                          run_["data"][:1])
    if arch.batchnorm:    # decided in float64, where the twins agree (tolerances.py)
        model = torch.build(arch, seed=1, dtype="float64")
        torch.set_weights(model, {k: v.astype(np.float64) for k, v in run_["initial"].items()})
        images, labels = run_["data"][0]
        _, weights = run(torch, model, faults.torch_default_adam(model, run_["recipe"]),
                         [(images.astype(np.float64), labels)])
        with pytest.raises(AssertionError, match="max abs error"):
            check_float64_weights(run_, 1, weights[1],
                                  what="float64 weights after 1 step with torch's default Adam")
        return
    with pytest.raises(AssertionError, match="max abs error"):
        check_weights(device, run_["recipe"], run_["initial"], 1, weights[1], run_["tf"][1][1],
                      what="weights after 1 step with torch's default Adam")
