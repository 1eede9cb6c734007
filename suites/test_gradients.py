"""Each framework's analytical gradients against central differences, in float64.

Everything goes through the adapter (the same code for both frameworks): the differences are
taken on adapter.loss with one weight or one input coordinate moved by +-h, and compared with
adapter.loss_and_gradients(..., wrt_inputs=True) at a few coordinates per tensor, drawn with
a fixed RNG plus the coordinate of the tensor's largest gradient (so that no tensor is
checked only where a dead ReLU makes its gradient zero).
"""
from __future__ import annotations

import numpy as np
import pytest

from twinbench import tolerances
from twinbench.agreement import compare, report

BATCH = 2                 # small: one loss evaluation per difference, two per coordinate
COORDINATES = 4           # random coordinates per tensor, plus the largest gradient's
# The probe's RNG seed (inputs, labels, coordinates): 0, except BatchNorm in training mode,
# where the batch statistics centre every ReLU input at its kink so that some sit within h of
# it: with seed 0 an s3 ReLU input of the torch twin lies 2.9e-10 from zero and every central
# difference upstream straddles it. Seed SEED_BN_TRAINING crosses none in either framework,
# which the test checks (tolerances.FD_SLOPE_JUMP) rather than assumes.
SEED_BN_TRAINING = 1
FD_SEEDS = {False: 0, True: SEED_BN_TRAINING}


@pytest.mark.parametrize("bn_mode", ["training", "inference"])
def test_gradients_match_finite_differences(framework, device, arch, bn_mode, record_property):
    """bn_mode: BatchNorm on the batch's statistics, or on its moving ones (which then have
    gradients of their own)."""
    if bn_mode == "inference" and not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: inference mode is the training-mode function")
    training = bn_mode == "training"
    h = tolerances.FD_STEP
    model = framework.build(arch, seed=0, dtype="float64")
    rng = np.random.default_rng(FD_SEEDS[arch.batchnorm and training])
    # Continuous inputs: no two activations tie in a max-pool window, few sit within h of a
    # ReLU kink.
    images = rng.standard_normal((BATCH, 32, 32, 3))
    labels = rng.integers(0, 10, BATCH)
    weights = {k: v.copy() for k, v in framework.get_weights(model).items()}

    loss, grads = framework.loss_and_gradients(model, images, labels, wrt_inputs=True,
                                               training=training)
    assert set(grads) == set(weights) | {"__input__"}
    assert grads["__input__"].shape == images.shape
    for name, g in grads.items():
        assert g.dtype == np.float64, f"{name}: gradient is {g.dtype} in a float64 model"
    # The same function twice: only a GPU's summation order may move its last bits.
    again = framework.loss(model, images, labels, training=training)
    assert abs(again - loss) <= 16 * tolerances.EPS64 * abs(loss), (
        f"loss() gives {again!r}, loss_and_gradients() {loss!r}")

    def loss_at(name, index, delta):
        if name == "__input__":
            framework.set_weights(model, weights)   # undo the last weight's move
            moved = images.copy()
            moved[index] += delta
            return framework.loss(model, moved, labels, training=training)
        moved = dict(weights)
        moved[name] = weights[name].copy()
        moved[name][index] += delta
        framework.set_weights(model, moved)
        return framework.loss(model, images, labels, training=training)

    analytical, numerical, slope_jumps = {}, {}, {}
    for name, g in grads.items():
        flat = list(rng.choice(g.size, size=min(COORDINATES, g.size), replace=False))
        flat.append(int(np.argmax(np.abs(g))))
        indices = [np.unravel_index(i, g.shape) for i in flat]
        analytical[name] = np.array([g[i] for i in indices])
        sides = np.array([(loss_at(name, i, h), loss_at(name, i, -h)) for i in indices])
        numerical[name] = (sides[:, 0] - sides[:, 1]) / (2 * h)
        # The forward and backward one-sided slopes: on a smooth piece they differ by h * L''
        # (about 1e-6 |L''|); a ReLU kink crossed within +-h makes them differ by the jump in
        # slope, and the central difference then sits between the two pieces' derivatives.
        slope_jumps[name] = np.abs((sides[:, 0] - loss) - (loss - sides[:, 1])) / h
    framework.set_weights(model, weights)
    worst = max(slope_jumps, key=lambda k: slope_jumps[k].max())
    record_property("fd_max_slope_jump", float(slope_jumps[worst].max()))
    assert slope_jumps[worst].max() <= tolerances.FD_SLOPE_JUMP, (
        f"{framework.name} {arch.name} {bn_mode}: the probe at {worst} crosses a kink (one-sided "
        f"slopes differ by {slope_jumps[worst].max():.3g} > {tolerances.FD_SLOPE_JUMP:g}); "
        "choose another probe (FD_SEEDS), not a looser bound")

    errors = compare(analytical, numerical, tolerances.FD_GRADIENT[device],
                     what=f"{framework.name} {arch.name} analytical vs finite-difference gradients")
    report(errors, f"finite differences {framework.name}-{device}-{arch.name}-{bn_mode}",
           record_property)
