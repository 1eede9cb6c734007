"""What CIFAR-10 is (classes, image shape, counts) and the types every layout hands out."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # label order of batches.meta
SPLITS = ("train", "val", "test", "trainval")
# trainval = all 50,000 official training images (what the reference recipes train on);
# val = 10% of each class of trainval, held out; train = trainval minus val; test = official test.

IMAGE_SHAPE = (32, 32, 3)

# Images per class in each official split. Real data is checked against these; tests pass
# smaller counts for their synthetic sets (`expected_counts=`).
CIFAR10_COUNTS: Mapping[str, int] = MappingProxyType({"train": 5000, "test": 1000})

CANONICAL_DIRNAME = "cifar-10-batches-py"

LAYOUT_HELP = (
    "accepted layouts: (1) canonical: a directory holding data_batch_1..data_batch_5, "
    "test_batch and batches.meta (or holding a 'cifar-10-batches-py' directory with them); "
    "(2) image folder: a directory with train/<class>/ and test/<class>/ subdirectories of "
    f".jpg/.jpeg/.png images, classes {', '.join(CLASSES)}"
)

Progress = Callable[[str], None]


class DatasetError(Exception):
    """Bad or missing data; the message names the file or directory and what is wrong."""


@dataclass(frozen=True)
class DataSource:
    kind: str  # "canonical" or "imagefolder"
    path: Path  # the directory holding the batch files, or the image-folder root
    name: str  # threshold key: "cifar10", "cifar10-jpeg", "imagefolder-unknown", ...
    digest: str  # sha256 hex of the content (see canonical_digest / imagefolder_digest)


@dataclass(frozen=True)
class Dataset:
    images: np.ndarray  # uint8, (N, 32, 32, 3), NHWC, C-contiguous
    labels: np.ndarray  # int64, (N,)
    split: str
    source: DataSource

    def __len__(self) -> int:
        return len(self.labels)


def check_class_counts(labels: np.ndarray, per_class: int, where: str) -> None:
    counts = np.bincount(labels, minlength=len(CLASSES))
    wrong = [f"{CLASSES[c]} {counts[c]}" for c in range(len(CLASSES)) if counts[c] != per_class]
    if wrong:
        raise DatasetError(f"{where}: images per class {', '.join(wrong)}; expected {per_class} "
                           "each")


def file_hash(path: str | os.PathLike, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
