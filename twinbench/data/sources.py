"""Find a data set, verify it completely, and hand out its splits as NumPy arrays."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from twinbench.data import cache, splits
from twinbench.data.canonical import CANONICAL_MD5, load_canonical_split, resolve_canonical
from twinbench.data.cifar10 import (CANONICAL_DIRNAME, CIFAR10_COUNTS, LAYOUT_HELP, SPLITS,
                                    Dataset, DatasetError, DataSource, Progress,
                                    check_class_counts)
from twinbench.data.download import default_canonical_dir


def resolve_source(path: str | os.PathLike | None, *, cache_dir: str | os.PathLike | None = None,
                   download: bool = True, expected_counts: Mapping[str, int] = CIFAR10_COUNTS,
                   checksums: Mapping[str, str] | None = None,
                   progress: Progress | None = None) -> DataSource:
    """Find, verify and fully validate a data set; raise DatasetError on anything wrong.

    path None means the canonical copy under default_data_dir(), downloaded when absent and
    `download` is true (a given path never downloads anything). A path is detected as
    canonical or image-folder layout. Validation is complete: canonical files are md5-checked
    and parsed; image folders are decoded (once: later calls hit the array cache in
    `cache_dir`). `checksums` replaces CANONICAL_MD5 (for synthetic canonical data in tests).
    """
    if path is None:
        canonical_dir = default_canonical_dir(download, checksums, progress)
        return resolve_canonical(canonical_dir, checksums, expected_counts)
    root = Path(path).expanduser()
    kind, found = _detect_layout(root)
    if kind == "canonical":
        return resolve_canonical(found, checksums, expected_counts)
    return cache.resolve_imagefolder(found, cache.cache_root(cache_dir), expected_counts, progress)


def load_split(source: DataSource, split: str, *, cache_dir: str | os.PathLike | None = None,
               expected_counts: Mapping[str, int] = CIFAR10_COUNTS,
               checksums: Mapping[str, str] | None = None,
               progress: Progress | None = None) -> Dataset:
    """One split of a resolved source as NumPy arrays (see SPLITS for what each split is).

    Canonical files are md5-verified again before unpickling (they may have changed since
    resolve_source); image folders load from the cache, rebuilt if missing or corrupt.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    official = "test" if split == "test" else "train"
    if source.kind == "canonical":
        images, labels = load_canonical_split(source.path, official, checksums, expected_counts)
    elif source.kind == "imagefolder":
        images, labels = cache.load_imagefolder_split(source, official, cache.cache_root(cache_dir),
                                                      expected_counts, progress)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    check_class_counts(labels, expected_counts[official], f"{source.path} ({official})")
    if split in ("train", "val"):
        images, labels = splits.select(images, labels, held_out=(split == "val"))
    return Dataset(images=np.ascontiguousarray(images), labels=labels, split=split, source=source)


def _detect_layout(root: Path) -> tuple[str, Path]:
    """("canonical", dir with the batch files) or ("imagefolder", root); else DatasetError."""
    if not root.exists():
        raise DatasetError(f"data path {root} does not exist; {LAYOUT_HELP}")
    if not root.is_dir():
        raise DatasetError(f"data path {root} is a file, not a directory; {LAYOUT_HELP}")
    for candidate in (root, root / CANONICAL_DIRNAME):
        present = [name for name in CANONICAL_MD5 if (candidate / name).exists()]
        if len(present) == len(CANONICAL_MD5):
            return "canonical", candidate.resolve()
        if present:  # a canonical directory with files missing: say which, not "wrong layout"
            missing = [name for name in CANONICAL_MD5 if name not in present]
            raise DatasetError(f"{candidate} looks like the canonical layout but lacks "
                               f"{', '.join(missing)}")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "imagefolder", root.resolve()
    raise DatasetError(f"{root} is neither of the two data layouts; {LAYOUT_HELP}")
