"""The decoded-array cache that serves image folders: decode 60,000 files once, then load arrays.

One entry per tree fingerprint: <cache_dir>/imagefolder-<fingerprint>/ holding
{train,test}_{images,labels}.npy and meta.json (format, fingerprint, counts, sha256 of each
array, content digest). meta.json is written last and is the entry's seal; every file is
written atomically (twinbench.atomic). An entry is trusted only when sound: a truncated,
edited or foreign entry is discarded and rebuilt, never loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from twinbench import atomic
from twinbench.data import imagefolder
from twinbench.data.cifar10 import IMAGE_SHAPE, DataSource, DatasetError, Progress, report

CACHE_FORMAT = 1  # bump when the cache layout or decoding changes: old entries are then ignored
ENTRY_PREFIX = "imagefolder-"

# (cache root, content digest) -> cache entry, for entries validated against their tree in this
# process; lets load_imagefolder_split skip the tree scan that resolve_imagefolder just did.
_VALIDATED_ENTRIES: dict[tuple[str, str], Path] = {}


def default_cache_dir() -> Path:
    """Where decoded image-folder arrays are cached: $TWINBENCH_CACHE or ~/.cache/..."""
    env = os.environ.get("TWINBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinbench" / "arrays"


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def resolve_imagefolder(root: Path, cache_dir: Path, expected_counts: Mapping[str, int],
                        progress: Progress | None) -> DataSource:
    """Check the tree and decode it (or find its sound entry); name it by its content digest."""
    meta = _ensure_cache(root, cache_dir, expected_counts, progress)[1]
    digest = meta["digest"]
    return DataSource(kind="imagefolder", path=root, name=imagefolder.source_name(digest),
                      digest=digest)


def load_imagefolder_split(source: DataSource, official: str, cache_dir: Path,
                           expected_counts: Mapping[str, int],
                           progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """One official split of the content `source.digest` names, from the cache.

    When this process already validated the tree (resolve_source), the entry is reused without
    rescanning 60,000 files: the arrays are still checked against their recorded sha256, and
    they are the content the source was resolved to, whatever happened to the tree since.
    """
    entry = _VALIDATED_ENTRIES.get((str(cache_dir), source.digest))
    if entry is not None:
        meta = _read_meta(entry)
        if _meta_problem(entry, meta) is None and meta["digest"] == source.digest:
            arrays = _read_cached_split(entry, meta, official)
            if arrays is not None:
                return arrays
    entry, meta = _ensure_cache(source.path, cache_dir, expected_counts, progress)
    if meta["digest"] != source.digest:
        raise DatasetError(f"{source.path}: content changed since it was resolved (digest "
                           f"{meta['digest'][:12]}..., was {source.digest[:12]}...)")
    arrays = _read_cached_split(entry, meta, official)
    if arrays is None:  # contents fail their recorded sha256: rebuild, never trust
        report(progress, f"discarding the cache at {entry}: {official} arrays fail their sha256")
        tree = imagefolder.scan_imagefolder(source.path, expected_counts)
        entry, meta = _build_cache(tree, entry, progress)
        arrays = _read_cached_split(entry, meta, official)
    if arrays is None:
        raise DatasetError(f"{entry}: cache unreadable right after it was written")
    return arrays


def _ensure_cache(root: Path, cache_dir: Path, expected_counts: Mapping[str, int],
                  progress: Progress | None) -> tuple[Path, dict]:
    """The cache entry (directory, meta) for root's current files; built if absent or corrupt.

    The layout and counts are checked from the listing every time (cheap); images are decoded
    only when no sound entry exists.
    """
    tree = imagefolder.scan_imagefolder(root, expected_counts)
    entry = cache_dir / f"{ENTRY_PREFIX}{imagefolder.fingerprint(tree, CACHE_FORMAT)}"
    meta = _read_meta(entry)
    problem = "absent" if meta is None else _check_cache(entry, meta, tree)
    if problem is not None:
        if meta is not None:
            report(progress, f"discarding the cache at {entry}: {problem}")
        entry, meta = _build_cache(tree, entry, progress)
    _VALIDATED_ENTRIES[(str(cache_dir), meta["digest"])] = entry
    return entry, meta


def _read_meta(entry: Path) -> dict | None:
    """The entry's meta.json; None when absent, {} when unreadable (then rebuilt)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _check_cache(entry: Path, meta: dict, tree: imagefolder.Tree) -> str | None:
    """Why the entry cannot be used, or None. Cheap (memory-mapped headers and file sizes);
    the contents' sha256 is checked when a split is actually read."""
    problem = _meta_problem(entry, meta)
    if problem:
        return problem
    for official, listed in tree.images.items():
        if meta["counts"][official] != len(listed):
            return f"its {official} count differs from the folder's"
        for kind in ("images", "labels"):
            problem = _check_array_file(entry, meta, official, kind)
            if problem:
                return problem
    return None


def _meta_problem(entry: Path, meta: dict | None) -> str | None:
    """What is wrong with meta.json's structure (hand-edited, old format, ...), or None."""
    if not meta:
        return "meta.json missing or unreadable"
    if meta.get("format") != CACHE_FORMAT:
        return f"cache format {meta.get('format')!r}, this version writes {CACHE_FORMAT}"
    if meta.get("fingerprint") != entry.name[len(ENTRY_PREFIX):]:
        return "meta.json belongs to another entry"
    counts, sha = meta.get("counts"), meta.get("sha256")
    complete = (isinstance(meta.get("digest"), str) and isinstance(counts, dict)
                and isinstance(sha, dict)
                and all(isinstance(counts.get(o), int) for o in ("train", "test"))
                and all(f"{o}_{k}" in sha for o in ("train", "test") for k in ("images", "labels")))
    return None if complete else "meta.json incomplete"


def _check_array_file(entry: Path, meta: dict, official: str, kind: str) -> str | None:
    """Shape, dtype and exact file size of one cached .npy file (truncation shows here)."""
    path = entry / f"{official}_{kind}.npy"
    n = meta["counts"][official]
    shape, dtype = ((n, *IMAGE_SHAPE), np.uint8) if kind == "images" else ((n,), np.int64)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        return f"{path.name}: {exc}"
    if array.shape != shape or array.dtype != dtype:
        return f"{path.name} is {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}"
    if path.stat().st_size != array.offset + array.nbytes:
        return f"{path.name}: file size does not match its header"
    return None


def _read_cached_split(entry: Path, meta: dict, official: str):
    """(images, labels) of one split, checked against the sha256 recorded at build; None if bad."""
    arrays = []
    for kind in ("images", "labels"):
        path = entry / f"{official}_{kind}.npy"
        if _check_array_file(entry, meta, official, kind):
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if hashlib.sha256(array.data).hexdigest() != meta["sha256"][f"{official}_{kind}"]:
            return None
        arrays.append(array)
    return arrays[0], arrays[1]


def _build_cache(tree: imagefolder.Tree, entry: Path,
                 progress: Progress | None) -> tuple[Path, dict]:
    """Decode every image (validating each), write the arrays, then seal with meta.json.

    meta.json is removed first and written last, and each file is written atomically: an
    interrupted build leaves no entry that a later run would trust.
    """
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").unlink(missing_ok=True)
    listed = [item for official in ("train", "test") for item in tree.images[official]]
    rels = [rel for rel, _ in listed]
    hashes: dict[str, str] = {}
    images = imagefolder.decode_all(tree.root, rels, hashes, progress)
    labels = np.array([label for _, label in listed], dtype=np.int64)
    meta = {"format": CACHE_FORMAT, "fingerprint": entry.name[len(ENTRY_PREFIX):],
            "root": str(tree.root), "counts": {}, "sha256": {}}
    start = 0
    for official in ("train", "test"):
        stop = start + len(tree.images[official])
        for kind, array in (("images", images[start:stop]), ("labels", labels[start:stop])):
            _save_array(entry / f"{official}_{kind}.npy", array)
            meta["sha256"][f"{official}_{kind}"] = hashlib.sha256(array.data).hexdigest()
        meta["counts"][official] = stop - start
        start = stop
    meta["digest"] = imagefolder.digest_from_hashes(tree.root, tree.files, hashes)
    atomic.write_bytes(entry / "meta.json", json.dumps(meta, indent=1).encode())
    report(progress, f"cached {len(rels):,} decoded images in {entry}")
    return entry, meta


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic.atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)
