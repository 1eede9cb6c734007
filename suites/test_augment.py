"""Augmentation (twinbench/augment.py): the transform does what Keras's ImageDataGenerator
does, draws come from the run's seed and epoch only, and both frameworks train on the very
same augmented images. The cost per epoch is a benchmark (-m benchmark), not a timed test."""
from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import pytest

from twinbench import augment, train
from twinbench.augment import Augmentation
from twinbench.recipes import RECIPES

ALMOST_EXACT = 1e-5   # float32 bilinear weights of cos/sin(pi/2), which are not exactly 0 and 1


def images(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


@pytest.fixture(params=["general", "separable"])
def transform(request):
    """The general bilinear map, and (without rotation) its separable fast path."""
    def run(x, theta=0.0, shift=(0.0, 0.0), flip=False):
        n = len(x)
        f = augment._transform if request.param == "general" or theta else augment._translate
        return f(x, np.full(n, theta), np.tile(np.array(shift, float), (n, 1)), np.full(n, flip))
    return run


def test_identity_is_exact():
    x = images()
    assert np.array_equal(augment.augment(x, Augmentation(), np.random.default_rng(0)), x)


def test_flip_mirrors_columns(transform):
    x = images()
    assert np.array_equal(transform(x, flip=True), x[:, :, ::-1])


def test_whole_pixel_shift_replicates_the_edge(transform):
    """A shift of +1 row samples one row further down; the last row repeats (fill 'nearest')."""
    x = images()
    out = transform(x, shift=(1.0, 0.0))
    assert np.array_equal(out[:, :-1], x[:, 1:])
    assert np.array_equal(out[:, -1], x[:, -1])


def test_half_pixel_shift_interpolates(transform):
    x = images()
    out = transform(x, shift=(0.0, 0.5))
    np.testing.assert_allclose(out[:, :, :-1], (x[:, :, :-1] + x[:, :, 1:]) / 2, atol=ALMOST_EXACT)


def test_quarter_turn_is_a_rotation(transform):
    x = images()
    np.testing.assert_allclose(transform(x, theta=np.pi / 2), np.rot90(x, k=-1, axes=(1, 2)),
                               atol=ALMOST_EXACT)


def test_the_separable_shift_is_the_general_map_without_rotation():
    """Random fractional shifts (beyond the edges too) and flips: the fast path gives the
    general bilinear map's values up to float32 rounding of the reordered sums."""
    x, rng = images(64), np.random.default_rng(5)
    shifts, flips = rng.uniform(-4.5, 4.5, (64, 2)), rng.random(64) < 0.5
    general = augment._transform(x, np.zeros(64), shifts, flips)
    np.testing.assert_allclose(augment._translate(x, np.zeros(64), shifts, flips), general,
                               atol=ALMOST_EXACT)
    swapped = augment._translate(x, np.zeros(64), shifts[:, ::-1], flips)   # axes matter
    assert np.abs(swapped - general).max() > 0.1


def test_draws_follow_seed_and_epoch():
    x, aug = images(64), augment.get("mlperf_tiny")
    first = augment.augment(x, aug, augment.epoch_rng(0, 1))
    assert np.array_equal(first, augment.augment(x, aug, augment.epoch_rng(0, 1)))
    assert not np.array_equal(first, augment.augment(x, aug, augment.epoch_rng(0, 2)))
    assert not np.array_equal(first, augment.augment(x, aug, augment.epoch_rng(1, 1)))
    assert not np.array_equal(first, x)


def test_rejects_unknown_and_integer_input():
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.get("cutout")
    with pytest.raises(ValueError, match="float NHWC"):
        augment.augment(np.zeros((1, 32, 32, 3), np.uint8), Augmentation(), np.random.default_rng(0))


def test_frameworks_train_on_the_same_augmented_images(twins):
    """Two epochs of resnet8_short on 64 images in each framework: every array handed to
    prepare_data is the same in both (bitwise), each epoch's is newly augmented, the tensors
    hold exactly those values, and the learning rate follows the recipe's per-epoch decay."""
    recipe = dataclasses.replace(RECIPES["resnet8_short"], epochs=2)
    rng = np.random.default_rng(0)
    split = lambda n: SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                                      labels=rng.integers(0, 10, n))
    train_set, test_set = split(64), split(16)
    received, rates = {}, {}
    for fw in twins:
        arrays, lrs = received.setdefault(fw.name, []), rates.setdefault(fw.name, [])

        def spy_prepare(model, images, labels, fw=fw, arrays=arrays):
            data = type(fw).prepare_data(fw, model, images, labels)
            arrays.append(images.copy())
            resident = fw.from_tensor(data.images) if fw.name == "torch" else np.asarray(data.images)
            assert np.array_equal(resident, images), f"{fw.name}: the tensor is not the array"
            return data

        def spy_lr(model, optimizer, lr, fw=fw, lrs=lrs):
            lrs.append(lr)
            type(fw).set_learning_rate(fw, model, optimizer, lr)

        fw.prepare_data, fw.set_learning_rate = spy_prepare, spy_lr
        try:
            train.train(fw, recipe, train_set, test_set, seed=3)
        finally:
            del fw.prepare_data, fw.set_learning_rate
    tf_arrays, torch_arrays = received["tf"], received["torch"]
    assert len(tf_arrays) == len(torch_arrays) == 2 + recipe.epochs   # train, test, one per epoch
    for a, b in zip(tf_arrays, torch_arrays):
        assert np.array_equal(a, b)
    plain, epochs = tf_arrays[0], tf_arrays[2:]
    assert not np.array_equal(epochs[0], plain) and not np.array_equal(epochs[0], epochs[1])
    expected = [recipe.lr * recipe.lr_decay ** e for e in range(recipe.epochs)]
    assert rates["tf"] == rates["torch"] == expected


@pytest.mark.benchmark
@pytest.mark.parametrize("augmentation", ["shift_flip", "mlperf_tiny"])
def test_augmentation_cost_per_epoch(benchmark, framework, augmentation, progress):
    """What one epoch's augmentation (50,000 images; resnet8_short's shifts and flips, and the
    published transform with rotation) costs against one epoch of resnet8_short's training,
    extrapolated from 2,000 images. Run with `pytest -m benchmark suites/test_augment.py`;
    a ratio, not a gate."""
    import models
    epoch_images = 50_000
    x = RECIPES["resnet8_short"].prepare(
        np.random.default_rng(0).integers(0, 256, (epoch_images, 32, 32, 3), dtype=np.uint8))
    aug = augment.get(augmentation)
    benchmark.pedantic(augment.augment, args=(x, aug, augment.epoch_rng(0, 1)), rounds=3)
    model = framework.build(models.get("resnet8"))
    optimizer = framework.make_optimizer(model, RECIPES["resnet8_short"])
    n = 2_000
    data = framework.prepare_data(model, x[:n], np.zeros(n, np.int64))
    framework.fit_epoch(model, optimizer, data, 32, np.arange(n // 4))   # warm-up / tracing
    framework.synchronize()
    t0 = time.perf_counter()
    framework.fit_epoch(model, optimizer, data, 32, np.arange(n))
    framework.synchronize()
    epoch_s = (time.perf_counter() - t0) * epoch_images / n
    augment_s = benchmark.stats.stats.mean
    benchmark.extra_info.update(framework=framework.name, train_epoch_s=epoch_s,
                                augment_fraction_of_epoch=augment_s / epoch_s)
    progress(f"{augmentation} augmentation of {epoch_images:,} images: {augment_s:.2f} s "
             f"(mean of 3 rounds) = {augment_s / epoch_s:.1%} of one {framework.name} "
             f"resnet8_short training epoch ({epoch_s:.1f} s, from {n:,} images)")
