"""Input pipelines on real CIFAR-10: each framework gets the numbers its recipe expects.

The loader hands out uint8 NHWC; a recipe's `prepare` normalizes in NumPy; each adapter then
lays the batch out its own way (torch NCHW, TensorFlow NHWC). Both must carry the same
numbers, and those must be what the reference programs feed their networks.
"""
from __future__ import annotations

import numpy as np
import pytest

import models
from fixtures.frameworks import adapter
from twinbench.recipes import RECIPES

BATCH = 64


def test_split_shapes_and_classes(dataset):
    """Every split: uint8 NHWC images, int64 labels 0..9, every class present."""
    assert dataset.images.dtype == np.uint8 and dataset.images.shape[1:] == (32, 32, 3)
    assert dataset.labels.dtype == np.int64 and dataset.labels.shape == (len(dataset.images),)
    counts = np.bincount(dataset.labels, minlength=10)
    assert counts.min() > 0 and len(counts) == 10
    expected = {"train": 45_000, "val": 5_000, "test": 10_000}[dataset.split]
    assert len(dataset.labels) == expected, f"{dataset.split}: {len(dataset.labels)} images"


@pytest.mark.parametrize("recipe_name", list(RECIPES))
def test_framework_inputs_carry_the_same_numbers(recipe_name, twins, load_split):
    """torch's NCHW tensor and TensorFlow's NHWC tensor hold bitwise-identical values."""
    recipe = RECIPES[recipe_name]
    arch = models.get(recipe.arch)
    images = recipe.prepare(load_split("test").images[:BATCH])
    tf_fw, torch_fw = twins
    as_tf = tf_fw.from_tensor(tf_fw.to_tensor(tf_fw.build(arch), images))
    as_torch = torch_fw.from_tensor(torch_fw.to_tensor(torch_fw.build(arch), images))
    np.testing.assert_array_equal(as_tf, images)
    np.testing.assert_array_equal(as_torch, images)


def test_lenet_inputs_match_the_torch_reference_transform(load_split):
    """lenet_sgd's inputs are torchvision's ToTensor + Normalize(0.5, 0.5), to the bit."""
    adapter("torch", "cpu")   # a skip with the reason where torch cannot be loaded
    from twinbench.frameworks.torch_backend import tutorial_inputs
    images = load_split("test").images[:BATCH]
    np.testing.assert_array_equal(RECIPES["lenet_sgd"].prepare(images), tutorial_inputs(images))


def test_keras_inputs_match_the_tensorflow_reference_scaling(load_split):
    """keras_cnn_adam's inputs are the TF tutorial's images / 255.0 (float64) as Keras casts
    them to float32: at most one float32 rounding step apart (the tutorial divides in float64)."""
    images = load_split("test").images[:BATCH]
    expected = (images / 255.0).astype(np.float32)
    got = RECIPES["keras_cnn_adam"].prepare(images)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=np.finfo(np.float32).eps / 2)
