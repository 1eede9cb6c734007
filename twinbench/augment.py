"""Training-set augmentation in NumPy, made once per epoch at the framework boundary.

Both frameworks then train on the very same augmented images: the random transform of every
image is drawn from the run's seed and the epoch, never from a framework's RNG. The transform
is Keras's ImageDataGenerator's (the MLPerf Tiny recipe: rotation_range=15,
width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True): a rotation about the
image centre by a uniform angle, a uniform shift of up to a fraction of the side (continuous,
not whole pixels), bilinear interpolation, out-of-image samples taken from the nearest edge
pixel (fill_mode='nearest'), then a horizontal flip with probability 1/2. The draws differ
from Keras's (another RNG); the distribution is the same.

Vectorized: every output pixel's source coordinate for a whole chunk of images at once, and
one gather of the four neighbours (the flip folded into the coordinates). Without rotation a
shift moves every pixel of an image by the same amount, so the bilinear map separates into a
linear interpolation between two whole rows, then between two whole columns, with weights
per image and row (column): the same values up to float rounding, at a fraction of the cost
(`pytest -m benchmark suites/test_augment.py`; docs/methodology.md#resnet8).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 4096    # images per vectorized pass: bounds the coordinate arrays to ~100 MB


@dataclass(frozen=True)
class Augmentation:
    rotation_deg: float = 0.0     # uniform in [-rotation_deg, rotation_deg]
    shift: float = 0.0            # uniform in [-shift, shift] times the side, per axis
    flip: bool = False            # horizontal flip with probability 1/2


AUGMENTATIONS = {
    # MLPerf Tiny's train.py (ImageDataGenerator arguments), as published
    "mlperf_tiny": Augmentation(rotation_deg=15.0, shift=0.1, flip=True),
    # the same without rotation (the short recipe: recipes.py says why)
    "shift_flip": Augmentation(shift=0.1, flip=True),
}


def get(name: str) -> Augmentation:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The augmentation draws of one epoch; a stream of its own, apart from the sample order's
    (twinbench.train.epoch_order uses [seed, epoch])."""
    return np.random.default_rng([seed, epoch, 0xA06])


def augment(images: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """A randomly transformed copy of a float NHWC batch (the recipe's prepared images)."""
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"augment takes a float NHWC batch, got {images.dtype} {images.shape}")
    n = len(images)
    theta = np.deg2rad(rng.uniform(-aug.rotation_deg, aug.rotation_deg, n))
    shifts = rng.uniform(-aug.shift, aug.shift, (n, 2)) * np.array(images.shape[1:3])
    flips = rng.random(n) < 0.5 if aug.flip else np.zeros(n, bool)
    out = np.empty_like(images)
    transform = _transform if aug.rotation_deg else _translate
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        out[part] = transform(images[part], theta[part], shifts[part], flips[part])
    return out


def _weights(size: int, shift: np.ndarray, flips: np.ndarray | None, dtype):
    """For a shift per image along one axis of `size` pixels: the lower source index of each
    output pixel and the weight of the next one (edge pixels repeated: fill_mode='nearest')."""
    out = np.arange(size, dtype=np.float64)[None, :].repeat(len(shift), axis=0)
    if flips is not None:
        out = np.where(flips[:, None], (size - 1) - out, out)   # flip after the transform
    src = np.clip(out + shift[:, None], 0, size - 1)
    low = np.minimum(np.floor(src).astype(np.int64), size - 2)
    return low, (src - low).astype(dtype)


def _lerp_axis1(x, low, frac):
    """Linear interpolation along axis 1 between x[:, low] and x[:, low + 1] with weight frac
    of the second, low and frac of shape (N, L): whole slices of the other axes are gathered
    at once (contiguous blocks, unlike a per-pixel gather)."""
    n, length = low.shape
    flat = x.reshape(n * length, -1)
    index = ((np.arange(n) * length)[:, None] + low).ravel()
    weight = frac.reshape(-1, 1)
    a, b = np.take(flat, index, axis=0), np.take(flat, index + 1, axis=0)
    a *= 1 - weight
    b *= weight
    a += b
    return a.reshape(x.shape)


def _translate(images, theta, shifts, flips):
    """_transform for theta = 0, separated: between rows, then between columns (as rows of
    the transposed images)."""
    n, h, w, c = images.shape
    r0, fr = _weights(h, shifts[:, 0], None, images.dtype)
    c0, fc = _weights(w, shifts[:, 1], flips, images.dtype)
    rows = _lerp_axis1(np.ascontiguousarray(images), r0, fr)
    columns = _lerp_axis1(np.ascontiguousarray(rows.transpose(0, 2, 1, 3)), c0, fc)
    return columns.transpose(0, 2, 1, 3)


def _transform(images, theta, shifts, flips):
    n, h, w, c = images.shape
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                             indexing="ij")
    cols = np.where(flips[:, None, None], (w - 1) - cols, cols)    # flip after the transform
    # Output pixel -> source coordinate: rotate about the centre, then shift (the inverse map
    # that scipy.ndimage.affine_transform applies in ImageDataGenerator).
    cy, cx = (h - 1) / 2, (w - 1) / 2
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    y, x = rows - cy, cols - cx
    src_r = np.clip(cos * y - sin * x + cy + shifts[:, 0, None, None], 0, h - 1)
    src_c = np.clip(sin * y + cos * x + cx + shifts[:, 1, None, None], 0, w - 1)
    r0 = np.minimum(np.floor(src_r).astype(np.int64), h - 2)
    c0 = np.minimum(np.floor(src_c).astype(np.int64), w - 2)
    fr = (src_r - r0).astype(images.dtype)[..., None]
    fc = (src_c - c0).astype(images.dtype)[..., None]
    # one flat pixel table and global indices: np.take copies a pixel's channels as one block
    flat = np.ascontiguousarray(images).reshape(n * h * w, c)
    base = (np.arange(n) * (h * w))[:, None, None] + r0 * w + c0

    def at(offset):
        return np.take(flat, (base + offset).ravel(), axis=0).reshape(n, h, w, c)

    top = at(0) * (1 - fc) + at(1) * fc
    bottom = at(w) * (1 - fc) + at(w + 1) * fc
    return top * (1 - fr) + bottom * fr
