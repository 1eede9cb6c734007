"""The val split: a fixed 1/10 of each class of the official training images, held out."""
from __future__ import annotations

import numpy as np

from twinbench.data.cifar10 import CLASSES, DatasetError

# The val split is part of the benchmark's definition: changing this seed changes every
# train/val number. The legacy RandomState stream is frozen by NumPy (NEP 19), so the same
# seed gives the same indices on every machine and NumPy version.
VAL_SEED = 20261126
VAL_FRACTION_DENOMINATOR = 10  # 1/10 of each class: 500 of 5,000 for the real data


def val_indices(labels_trainval: np.ndarray) -> np.ndarray:
    """Sorted indices of the val split: 1/10 of each class, by a seeded permutation per class.

    Each class has its own RandomState(VAL_SEED + class) so one class's choice does not depend
    on another's size; 500 per class (5,000 in all) for the real training set.
    """
    labels = np.asarray(labels_trainval)
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES))):
        raise DatasetError(f"val_indices needs 1-d labels in 0..{len(CLASSES) - 1}")
    chosen = []
    for label in range(len(CLASSES)):
        members = np.flatnonzero(labels == label)
        if len(members) < VAL_FRACTION_DENOMINATOR:
            raise DatasetError(f"class {CLASSES[label]!r} has {len(members)} training images; "
                               f"a val split needs at least {VAL_FRACTION_DENOMINATOR} per class")
        order = np.random.RandomState(VAL_SEED + label).permutation(len(members))
        chosen.append(members[order[:len(members) // VAL_FRACTION_DENOMINATOR]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def select(images: np.ndarray, labels: np.ndarray, held_out: bool):
    """The val rows of (images, labels) when held_out, else the rest ("train"), in order."""
    mask = np.zeros(len(labels), dtype=bool)
    mask[val_indices(labels)] = True
    keep = mask if held_out else ~mask
    return images[keep], labels[keep]
