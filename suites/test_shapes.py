"""Shapes: logits for any batch size, the same feature maps in both twins, and clear
errors for inputs the twins do not take."""
from __future__ import annotations

import numpy as np
import pytest

BATCH_SIZES = (1, 2, 7, 32)


@pytest.fixture(scope="module")
def model(framework, arch):
    return framework.build(arch, seed=0)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


def test_logits_shape(framework, model):
    for n in BATCH_SIZES:
        logits = framework.forward(model, images(n))
        assert isinstance(logits, np.ndarray), f"batch {n}: got {type(logits).__name__}"
        assert logits.shape == (n, 10), f"batch {n}: logits shape {logits.shape}"
        assert logits.dtype == np.float32, f"batch {n}: logits dtype {logits.dtype}"
        assert np.isfinite(logits).all(), f"batch {n}: logits not finite"


def test_feature_shapes(framework, model, arch):
    """Every stage's per-image output (NHWC), in order, is the architecture's."""
    shapes = framework.feature_shapes(model, images(2))
    assert list(shapes.items()) == list(arch.feature_shapes)


def test_feature_shapes_agree(twins, arch):
    tf, torch = twins
    x = images(2)
    tf_shapes = tf.feature_shapes(tf.build(arch, seed=0), x)
    torch_shapes = torch.feature_shapes(torch.build(arch, seed=0), x)
    assert list(torch_shapes.items()) == list(tf_shapes.items())


BAD_INPUTS = [
    pytest.param((2, 28, 28, 3), r"28x28 images; the twins take 32x32", id="28x28"),
    pytest.param((2, 32, 32, 1), r"one channel", id="one_channel"),
    pytest.param((2, 3, 32, 32), r"looks like NCHW", id="nchw"),
    pytest.param((0, 32, 32, 3), r"empty batch", id="empty_batch"),
]


@pytest.mark.parametrize("shape, message", BAD_INPUTS)
def test_rejects_bad_input(framework, model, shape, message):
    bad = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape[0], dtype=np.int64)
    with pytest.raises(ValueError, match=message):
        framework.forward(model, bad)
    with pytest.raises(ValueError, match=message):
        framework.loss_and_gradients(model, bad, labels)
