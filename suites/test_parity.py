"""The twins compute the same function with the same gradients, in float32.

The TensorFlow twin is built (Keras's initializers), its weights are copied into the torch twin
through the canonical layout, and both see the same batch. The bounds (twinbench/tolerances.py)
are what float32 accumulation order can explain. The last tests break one twin in the ways a
port goes wrong and show that the same comparisons then fail.
"""
from __future__ import annotations

import numpy as np
import pytest

from twinbench import recipes, tolerances
from twinbench.frameworks import faults
from twinbench.agreement import compare, report
from twinbench.tolerances import parity

BATCH = 16   # the accumulation lengths in twinbench/tolerances.py assume this batch


def batch(arch, seed: int = 0):
    """BATCH random images prepared as the architecture's own recipe prepares CIFAR-10."""
    recipe = recipes.for_arch(arch.name)
    rng = np.random.default_rng(seed)
    images = recipe.prepare(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8))
    return images, rng.integers(0, 10, BATCH)


def shared_twins(twins, arch, seed: int = 0, dtype: str = "float32"):
    """(tf model, torch model) with the tf twin's initial (float32) weights in both."""
    tf, torch = twins
    weights = tf.get_weights(tf.build(arch, seed=seed))
    models = tf.build(arch, seed=seed, dtype=dtype), torch.build(arch, seed=seed + 1, dtype=dtype)
    for fw, model in zip(twins, models):
        fw.set_weights(model, {k: v.astype(dtype) for k, v in weights.items()})
    return models


def bn_training(arch, bn_mode) -> bool:
    """BatchNorm on batch statistics: the float64 policy of twinbench/tolerances.py applies."""
    return arch.batchnorm and bn_mode == "training"


@pytest.fixture(scope="module", params=["training", "inference"])
def bn_mode(request):
    """BatchNorm on the batch's statistics (training) or on its moving ones (inference)."""
    return request.param


@pytest.fixture(scope="module")
def outputs(twins, arch, bn_mode):
    """Logits, loss and gradients of both twins on one batch: {framework name: (...)}."""
    if bn_mode == "inference" and not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: inference mode is the training-mode function")
    images, labels = batch(arch)
    training = bn_mode == "training"
    # float64 twins too where BatchNorm trains on batch statistics (twinbench/tolerances.py)
    dtypes = ("float32", "float64") if bn_training(arch, bn_mode) else ("float32",)
    out = {}
    for dtype in dtypes:
        suffix = "" if dtype == "float32" else "64"
        for fw, model in zip(twins, shared_twins(twins, arch, dtype=dtype)):
            x = images.astype(dtype)
            out[fw.name + suffix] = (fw.forward(model, x),
                                     *fw.loss_and_gradients(model, x, labels, training=training))
    return out


def test_logits_match(outputs, device, arch, record_property):
    errors = compare({"logits": outputs["torch"][0]}, {"logits": outputs["tf"][0]},
                     parity(device).logits, what=f"{arch.name} logits, torch vs tf")
    report(errors, f"parity {device}-{arch.name} logits", record_property)


def test_loss_matches(outputs, device, arch, record_property):
    errors = compare({"loss": outputs["torch"][1]}, {"loss": outputs["tf"][1]},
                     parity(device).loss, what=f"{arch.name} loss, torch vs tf")
    report(errors, f"parity {device}-{arch.name} loss", record_property)


def check_gradients(outputs, side: str, label: str, device, arch, bn_mode):
    """outputs[side]'s gradients against TensorFlow's: with BatchNorm in training mode within
    each side's own float32 error against its float64 run (tolerances.batchnorm_float32_floors;
    outputs[side + "64"] is that run), otherwise within the parity bound. The Keras-backend
    arms' suite calls it with its own side, so one bound means one thing."""
    if bn_training(arch, bn_mode):
        scale = max(np.abs(g).max() for g in outputs["tf64"][2].values())
        floors = tolerances.batchnorm_float32_floors(outputs["tf"][2], outputs["tf64"][2],
                                                     outputs[side][2], outputs[side + "64"][2],
                                                     scale)
        return compare(outputs[side][2], outputs["tf"][2], tolerances.EXACT, floor=floors,
                       what=f"{arch.name} training-mode gradients, {label} vs tf")
    return compare(outputs[side][2], outputs["tf"][2], parity(device).gradients,
                   what=f"{arch.name} gradients, {label} vs tf")


def test_gradients_match(outputs, device, arch, bn_mode, record_property):
    errors = check_gradients(outputs, "torch", "torch", device, arch, bn_mode)
    report(errors, f"parity {device}-{arch.name} gradients", record_property)


def test_float64_twins_agree(outputs, arch, bn_mode, record_property):
    """With BatchNorm on batch statistics: the float64 twins compute the same logits, loss and
    gradients to far below float32 rounding, so the float32 differences are rounding
    (twinbench/tolerances.py, FLOAT64_TWINS; docs/methodology.md#resnet8)."""
    if not bn_training(arch, bn_mode):
        pytest.skip("float32 has its derived bounds here; float64 is needed for BatchNorm "
                    "in training mode only")
    errors = check_float64_outputs(outputs, "torch", "torch", arch)
    report(errors, f"parity {arch.name} float64", record_property)


def check_float64_outputs(outputs, side: str, label: str, arch):
    """outputs[side + "64"]'s logits, loss and gradients against TensorFlow's float64 run,
    within FLOAT64_TWINS (a gradient near zero: float64 rounding of the largest one). The
    Keras-backend arms' suite calls it with its own side."""
    tf64, other64 = outputs["tf64"], outputs[side + "64"]
    scale = max(np.abs(g).max() for g in tf64[2].values())
    floors = {k: tolerances.zero_gradient_floor(tolerances.U64, scale) for k in tf64[2]}
    return compare({"logits": other64[0], "loss": np.array([other64[1]]), **other64[2]},
                   {"logits": tf64[0], "loss": np.array([tf64[1]]), **tf64[2]},
                   tolerances.FLOAT64_TWINS, floor=floors,
                   what=f"{arch.name} float64 runs, {label} vs tf")


# -- the checks can fail ------------------------------------------------------------------------
def test_parity_catches_unpermuted_flatten(twins, device, arch):
    """Weights copied without reordering the first dense layer's rows into torch's (C, H, W)
    flatten order: a port's classic silent bug."""
    if arch.flatten_chw[1:] == (1, 1):
        pytest.skip(f"{arch.name}: a 1x1 map enters Flatten, so both flatten orders agree "
                    "(nothing to permute)")
    tf, torch = twins
    tf_model, torch_model = shared_twins(twins, arch)
    torch.set_weights(torch_model, tf.get_weights(tf_model), permute_flatten=False)
    assert_parity_catches(twins, tf_model, torch_model, device, arch,
                          gradient=f"{arch.first_dense}/kernel")


@pytest.mark.parametrize("broken", ["tf", "torch"])
def test_parity_catches_missing_relu(twins, device, arch, broken):
    """One twin without the ReLU after its first dense layer."""
    if not arch.dense_relu:
        pytest.skip(f"{arch.name}: its dense layer is the output (no ReLU to drop); its "
                    "mutations are in suites/test_resnet8_conventions.py")
    tf, torch = twins
    tf_model, torch_model = shared_twins(twins, arch)
    faults.break_relu(tf_model if broken == "tf" else torch_model, arch.first_dense)
    assert_parity_catches(twins, tf_model, torch_model, device, arch,
                          gradient=f"{arch.first_dense}/bias")


def assert_parity_catches(twins, tf_model, torch_model, device, arch, *, gradient: str) -> None:
    """A broken pair of twins fails the logits check, and the gradient check on `gradient`."""
    tf, torch = twins
    images, labels = batch(arch)
    tol = parity(device)
    with pytest.raises(AssertionError, match="logits: max abs error"):
        compare({"logits": torch.forward(torch_model, images)},
                {"logits": tf.forward(tf_model, images)}, tol.logits, what="logits")
    with pytest.raises(AssertionError, match=f"{gradient}: max abs error"):
        compare(torch.loss_and_gradients(torch_model, images, labels)[1],
                tf.loss_and_gradients(tf_model, images, labels)[1], tol.gradients,
                what="gradients")
