"""The canonical ``cifar-10-batches-py`` layout: every file md5-verified before it is unpickled
(unpickling runs arbitrary code), then parsed into NHWC uint8 images and int64 labels."""
from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from twinbench.data.cifar10 import CLASSES, DataSource, DatasetError, check_class_counts

# md5 of the files of the canonical release, as torchvision's datasets/cifar.py lists them.
CANONICAL_MD5: Mapping[str, str] = MappingProxyType({
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
})
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))

# Source names are threshold keys: accuracy thresholds exist per name, so a source only gets a
# known name when its content is proven to be that data set.
NAME_CANONICAL = "cifar10"
# Canonical layout verified against md5s other than CANONICAL_MD5 (synthetic sets in tests).
NAME_CUSTOM_CANONICAL = "canonical-custom-checksums"


def canonical_digest(md5s: Mapping[str, str]) -> str:
    """sha256 over the "<md5>  <file>" lines of the canonical files, in sorted file order."""
    text = "".join(f"{md5s[name]}  {name}\n" for name in sorted(md5s))
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_canonical(directory: Path, checksums: Mapping[str, str] | None,
                      expected_counts: Mapping[str, int]) -> DataSource:
    """md5-check all seven files, then parse both splits, so a bad copy stops the run now."""
    expected = checked_checksums(checksums)
    _read_label_names(directory, expected)
    for official in ("train", "test"):  # each file is md5-checked right before it is parsed
        load_canonical_split(directory, official, checksums, expected_counts)
    is_default = all(expected[name] == md5 for name, md5 in CANONICAL_MD5.items())
    return DataSource(kind="canonical", path=directory,
                      name=NAME_CANONICAL if is_default else NAME_CUSTOM_CANONICAL,
                      digest=canonical_digest({name: expected[name] for name in CANONICAL_MD5}))


def checked_checksums(checksums: Mapping[str, str] | None) -> Mapping[str, str]:
    """CANONICAL_MD5, or the replacement `checksums` once it is known to cover every file."""
    expected = CANONICAL_MD5 if checksums is None else checksums
    missing = [name for name in CANONICAL_MD5 if name not in expected]
    if missing:
        raise ValueError(f"checksums= lacks entries for {', '.join(missing)}")
    return expected


def load_canonical_split(directory: Path, official: str, checksums: Mapping[str, str] | None,
                         expected_counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (NHWC) and labels of "train" (the five batches, in order) or "test"."""
    expected = checked_checksums(checksums)
    names = TRAIN_BATCHES if official == "train" else ("test_batch",)
    parts = [_read_batch(directory / name, expected[name]) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    check_class_counts(labels, expected_counts[official], f"{directory} ({official} batches)")
    return images, labels


def _unpickle_verified(path: Path, expected_md5: str) -> object:
    """Unpickle from the very bytes whose md5 was checked, so the file cannot change in between."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing (needed by the canonical layout)")
    data = path.read_bytes()
    actual = hashlib.md5(data).hexdigest()
    if actual != expected_md5:
        raise DatasetError(f"{path}: md5 {actual} does not match the expected {expected_md5}; the "
                           "file is corrupt or not from the canonical release (not unpickled)")
    try:
        return pickle.loads(data, encoding="bytes")
    except Exception as exc:  # a verified but malformed pickle can fail in many ways
        raise DatasetError(f"{path}: cannot be unpickled: {exc}") from exc


def _read_batch(path: Path, expected_md5: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (N, 32, 32, 3) uint8 and (N,) int64, with its structure checked."""
    batch = _unpickle_verified(path, expected_md5)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: {labels.shape} labels of type {labels.dtype} for "
                           f"{len(data)} images; expected one integer label per image")
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASSES)))
    if bad.size:
        raise DatasetError(f"{path}: label {labels[bad[0]]} at index {bad[0]} is out of range "
                           f"0..{len(CLASSES) - 1} ({bad.size} such labels)")
    # Rows are channel-planar (1024 R, 1024 G, 1024 B): reshape to NCHW, then move C last.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _read_label_names(directory: Path, expected: Mapping[str, str]) -> None:
    """batches.meta must list CLASSES in order: labels mean nothing otherwise."""
    path = directory / "batches.meta"
    meta = _unpickle_verified(path, expected["batches.meta"])
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    decoded = tuple(n.decode() if isinstance(n, bytes) else n for n in names or ())
    if decoded != CLASSES:
        raise DatasetError(f"{path}: label_names {decoded} differ from {CLASSES}")
