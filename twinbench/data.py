"""CIFAR-10 for both frameworks: find it, verify it, decode it once, hand out NumPy splits.

Two on-disk layouts are accepted:

- canonical: the ``cifar-10-batches-py`` release (data_batch_1..5, test_batch, batches.meta),
  each file md5-verified *before* it is unpickled (unpickling runs arbitrary code);
- imagefolder: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` (also .jpeg/.png), e.g. the
  JPEG re-encoded copy described in ../shared/datasets/cifar10-jpeg/README.md.

Every split comes out the same way: uint8 NHWC images (N, 32, 32, 3), C-contiguous, and int64
labels in the label order of ``batches.meta`` (CLASSES). Framework adapters convert from there.

Bad input is never loaded partially: every problem is a DatasetError that names the file or
directory and what is wrong with it, raised by ``resolve_source`` before any test runs.

Pure NumPy + Pillow + stdlib; torch and TensorFlow are imported only to download, through
``twinbench.imports`` (the only import order that does not crash).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import secrets
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageFile

# ============================================================================================
# Constants: what CIFAR-10 is
# ============================================================================================

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")  # label order of batches.meta
SPLITS = ("train", "val", "test", "trainval")
# trainval = all 50,000 official training images (what the reference recipes train on);
# val = 10% of each class of trainval, held out; train = trainval minus val; test = official test.

IMAGE_SHAPE = (32, 32, 3)

# Images per class in each official split. Real data is checked against these; tests pass
# smaller counts for their synthetic sets (`expected_counts=`).
CIFAR10_COUNTS: Mapping[str, int] = MappingProxyType({"train": 5000, "test": 1000})

# md5 of the files of the canonical release, as torchvision's datasets/cifar.py lists them.
CANONICAL_DIRNAME = "cifar-10-batches-py"
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
CANONICAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CANONICAL_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision's check of the archive
CANONICAL_TGZ_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"  # keras'

# Content digest (imagefolder_digest) of ../shared/datasets/cifar10-jpeg, from its README.
CIFAR10_JPEG_DIGEST = "c217601eebcfee757a51b381539a30bc3b0a89cac54850a81d992750b4fa8352"

# Source names are threshold keys: accuracy thresholds exist per name, so a source only gets a
# known name when its content is proven to be that data set.
NAME_CANONICAL = "cifar10"
NAME_JPEG = "cifar10-jpeg"
NAME_UNKNOWN_FOLDER = "imagefolder-unknown"
# Canonical layout verified against md5s other than CANONICAL_MD5 (synthetic sets in tests).
NAME_CUSTOM_CANONICAL = "canonical-custom-checksums"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# OS droppings, ignored; any other unexpected file is an error.
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db"})

# The val split is part of the benchmark's definition: changing this seed changes every
# train/val number. The legacy RandomState stream is frozen by NumPy (NEP 19), so the same
# seed gives the same indices on every machine and NumPy version.
VAL_SEED = 20261126
VAL_FRACTION_DENOMINATOR = 10  # 1/10 of each class: 500 of 5,000 for the real data

CACHE_FORMAT = 1  # bump when the cache layout or decoding changes: old entries are then ignored
PROGRESS_EVERY = 10_000  # images between progress messages during a decode

Progress = Callable[[str], None]

LAYOUT_HELP = (
    "accepted layouts: (1) canonical: a directory holding data_batch_1..data_batch_5, "
    "test_batch and batches.meta (or holding a 'cifar-10-batches-py' directory with them); "
    "(2) image folder: a directory with train/<class>/ and test/<class>/ subdirectories of "
    f".jpg/.jpeg/.png images, classes {', '.join(CLASSES)}"
)


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


# ============================================================================================
# Public entry points
# ============================================================================================

def default_data_dir() -> Path:
    """Where the canonical copy lives or is downloaded to: $TWINBENCH_DATA_HOME or ~/.cache/..."""
    env = os.environ.get("TWINBENCH_DATA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinbench" / "data"


def default_cache_dir() -> Path:
    """Where decoded image-folder arrays are cached: $TWINBENCH_CACHE or ~/.cache/..."""
    env = os.environ.get("TWINBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinbench" / "arrays"


def resolve_source(path: str | os.PathLike | None, *, cache_dir: str | os.PathLike | None = None,
                   download: bool = True, expected_counts: Mapping[str, int] = CIFAR10_COUNTS,
                   checksums: Mapping[str, str] | None = None,
                   progress: Progress | None = None) -> DataSource:
    """Find, verify and fully validate a data set; raise DatasetError on anything wrong.

    path None means the canonical copy under default_data_dir(), downloaded when absent and
    `download` is true. A path is detected as canonical or image-folder layout. Validation is
    complete: canonical files are md5-checked and parsed; image folders are decoded (once:
    later calls hit the array cache in `cache_dir`).
    `checksums` replaces CANONICAL_MD5 (for synthetic canonical data in tests).
    """
    if path is None:
        canonical_dir = _default_canonical_dir(download, progress)
        return _resolve_canonical(canonical_dir, checksums, expected_counts)
    root = Path(path).expanduser()
    kind, found = _detect_layout(root)
    if kind == "canonical":
        return _resolve_canonical(found, checksums, expected_counts)
    return _resolve_imagefolder(found, _cache_root(cache_dir), expected_counts, progress)


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
        images, labels = _load_canonical_split(source.path, official, checksums, expected_counts)
    elif source.kind == "imagefolder":
        images, labels = _load_imagefolder_split(source, official, _cache_root(cache_dir),
                                                 expected_counts, progress)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")
    _check_class_counts(labels, expected_counts[official], f"{source.path} ({official})")
    if split in ("train", "val"):
        images, labels = _select_val(images, labels, held_out=(split == "val"))
    return Dataset(images=np.ascontiguousarray(images), labels=labels, split=split, source=source)


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


def imagefolder_digest(root: str | os.PathLike) -> str:
    """Content digest of an image folder: the integrity formula of the JPEG copy's README,

        find . -type f -name '*.jpg' | LC_ALL=C sort | xargs sha256sum | sha256sum

    byte for byte, widened from *.jpg to every image file (.jpg/.jpeg/.png, any case) so that a
    PNG folder gets a real digest rather than the hash of nothing. For a tree whose images are
    all *.jpg (the JPEG copy) the result is exactly the README's. File symlinks are followed.
    """
    root = Path(root)
    return _digest_from_hashes(root, _scan_tree(root), {})


def canonical_digest(md5s: Mapping[str, str]) -> str:
    """sha256 over the "<md5>  <file>" lines of the canonical files, in sorted file order."""
    text = "".join(f"{md5s[name]}  {name}\n" for name in sorted(md5s))
    return hashlib.sha256(text.encode()).hexdigest()


# ============================================================================================
# Layout detection and the default (downloaded) copy
# ============================================================================================

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


def _default_canonical_dir(download: bool, progress: Progress | None) -> Path:
    """The canonical copy under default_data_dir(), downloading it first when allowed."""
    root = default_data_dir()
    batches = root / CANONICAL_DIRNAME
    if all((batches / name).is_file() for name in CANONICAL_MD5):
        return batches
    if not download:
        raise DatasetError(f"no CIFAR-10 at {batches} and download is off; pass a data path "
                           f"(--data) or allow the download; {LAYOUT_HELP}")
    root.mkdir(parents=True, exist_ok=True)
    _report(progress, f"downloading CIFAR-10 into {root}")
    _download_canonical(root)
    return batches


def _download_canonical(root: Path) -> None:
    """Download and unpack the canonical archive into root, with the frameworks' own checks.

    torchvision first (it checks the archive's md5); else keras' get_file (sha256 of the
    archive). Either way the unpacked files are md5-checked again by _resolve_canonical.
    """
    from twinbench import imports  # the frameworks, in the order that does not crash

    try:
        if imports.installed("torch") and imports.torch_blocked_reason() is None:
            imports.torch()
            import torchvision

            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
            return
        if imports.installed("tf"):
            imports.tensorflow()
            import keras

            archive = keras.utils.get_file(fname="cifar-10-python.tar.gz", origin=CANONICAL_URL,
                                           file_hash=CANONICAL_TGZ_SHA256, cache_dir=str(root),
                                           cache_subdir="")
            _extract_archive(Path(archive), root)
            return
    except DatasetError:
        raise
    except Exception as exc:  # network and archive errors come in many types; all stop the run
        raise DatasetError(f"downloading CIFAR-10 into {root} failed: {exc}; "
                           f"download it elsewhere and pass its path (--data)") from exc
    raise DatasetError("cannot download CIFAR-10: neither torchvision nor tensorflow is "
                       f"installed; pass a data path (--data); {LAYOUT_HELP}")


def _extract_archive(archive: Path, root: Path) -> None:
    """Unpack the md5-checked archive; the "data" filter refuses links and paths outside root."""
    actual = _file_hash(archive, "md5")
    if actual != CANONICAL_TGZ_MD5:
        raise DatasetError(f"{archive}: md5 {actual}, expected {CANONICAL_TGZ_MD5}")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(root, filter="data")


# ============================================================================================
# Canonical layout
# ============================================================================================

def _resolve_canonical(directory: Path, checksums: Mapping[str, str] | None,
                       expected_counts: Mapping[str, int]) -> DataSource:
    """md5-check all seven files, then parse both splits, so a bad copy stops the run now."""
    expected = _checksums(checksums)
    _read_label_names(directory, expected)
    for official in ("train", "test"):  # each file is md5-checked right before it is parsed
        _load_canonical_split(directory, official, checksums, expected_counts)
    is_default = all(expected[name] == md5 for name, md5 in CANONICAL_MD5.items())
    return DataSource(kind="canonical", path=directory,
                      name=NAME_CANONICAL if is_default else NAME_CUSTOM_CANONICAL,
                      digest=canonical_digest({name: expected[name] for name in CANONICAL_MD5}))


def _checksums(checksums: Mapping[str, str] | None) -> Mapping[str, str]:
    expected = CANONICAL_MD5 if checksums is None else checksums
    missing = [name for name in CANONICAL_MD5 if name not in expected]
    if missing:
        raise ValueError(f"checksums= lacks entries for {', '.join(missing)}")
    return expected


def _load_canonical_split(directory: Path, official: str, checksums: Mapping[str, str] | None,
                          expected_counts: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (NHWC) and labels of "train" (the five batches, in order) or "test"."""
    expected = _checksums(checksums)
    names = TRAIN_BATCHES if official == "train" else ("test_batch",)
    parts = [_read_batch(directory / name, expected[name]) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    _check_class_counts(labels, expected_counts[official], f"{directory} ({official} batches)")
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


# ============================================================================================
# Image-folder layout: scan, validate, fingerprint
# ============================================================================================

# (POSIX path relative to the root, size, mtime_ns): a plain tuple, as 60,000 are made per scan.
_FileInfo = tuple[str, int, int]


@dataclass(frozen=True)
class _Tree:
    root: Path
    files: tuple[_FileInfo, ...]  # every non-directory entry, for the fingerprint and digest
    images: Mapping[str, tuple[tuple[str, int], ...]]  # official split -> ((rel path, label), ...)


def _scan_tree(root: Path) -> tuple[_FileInfo, ...]:
    """Every file under root, sorted by path (as str: the same as byte order for UTF-8 names).

    This runs on every resolve, so it is kept lean: one stat per file (the size and mtime the
    cache key needs), paths built as strings (pathlib's relative_to tripled the time), plain
    tuples. Symlinked directories are not entered, as with `find`.
    """
    found = []
    pending = [("", str(root))]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((rel + "/", entry.path))
                    continue
                try:
                    stat = entry.stat()  # follows a file symlink: its target is what is read
                except FileNotFoundError as exc:
                    raise DatasetError(f"{entry.path}: broken symlink") from exc
                found.append((rel, stat.st_size, stat.st_mtime_ns))
    found.sort()
    return tuple(found)


def _scan_imagefolder(root: Path, expected_counts: Mapping[str, int]) -> _Tree:
    """List and check the layout, file names and counts; decodes nothing."""
    files = _scan_tree(root)
    by_dir: dict[str, list[str]] = {}
    for rel, _, _ in files:
        parent, _, name = rel.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    images = {official: _list_split(root, official, by_dir, expected_counts[official])
              for official in ("train", "test")}
    return _Tree(root=root, files=files, images=MappingProxyType(images))


def _list_split(root: Path, official: str, by_dir: Mapping[str, list[str]],
                per_class: int) -> tuple[tuple[str, int], ...]:
    """(relative path, label) of one split's images, in class order then file-name order."""
    split_dir = root / official
    folders = {p.name for p in split_dir.iterdir() if p.is_dir()}
    unknown = sorted(folders - set(CLASSES))
    if unknown:
        raise DatasetError(f"{split_dir}: unknown class folder(s) {', '.join(unknown)}; "
                           f"expected exactly {', '.join(CLASSES)}")
    missing = [c for c in CLASSES if c not in folders]
    if missing:
        raise DatasetError(f"{split_dir}: missing class folder(s) {', '.join(missing)}")
    stray = [n for n in by_dir.get(official, []) if n not in JUNK_FILES]
    if stray:
        raise DatasetError(f"{split_dir}: unexpected file(s) {', '.join(stray[:5])} outside "
                           "the class folders")
    listed = []
    for label, cls in enumerate(CLASSES):
        names = [n for n in by_dir.get(f"{official}/{cls}", []) if n not in JUNK_FILES]
        bad = [n for n in names if not n.lower().endswith(IMAGE_SUFFIXES)]
        if bad:
            raise DatasetError(f"{split_dir / cls}: unexpected file(s) {', '.join(bad[:5])}; "
                               f"class folders hold only {'/'.join(IMAGE_SUFFIXES)} images")
        nested = sorted({d.split("/")[2] for d in by_dir if d.startswith(f"{official}/{cls}/")})
        if nested:
            raise DatasetError(f"{split_dir / cls}: unexpected subfolder(s) "
                               f"{', '.join(nested[:5])}")
        if len(names) != per_class:
            raise DatasetError(f"{split_dir / cls}: {len(names)} images, expected {per_class} "
                               f"(CIFAR-10 has {CIFAR10_COUNTS['train']:,} per class in train "
                               f"and {CIFAR10_COUNTS['test']:,} in test)")
        listed.extend((f"{official}/{cls}/{n}", label) for n in names)  # names already sorted
    return tuple(listed)


def _fingerprint(tree: _Tree) -> str:
    """Cache key: a hash of relative paths, sizes and mtimes; cheap, no file contents read."""
    text = "".join(f"{rel}\t{size}\t{mtime_ns}\n" for rel, size, mtime_ns in tree.files)
    key = f"twinbench-imagefolder-cache v{CACHE_FORMAT}\n{text}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _digest_from_hashes(root: Path, files: tuple[_FileInfo, ...], known: Mapping[str, str]) -> str:
    """imagefolder_digest over `files`, reusing the sha256 hexes computed while decoding.

    An image file the decode did not read (one outside the class folders) is read here.
    """
    h = hashlib.sha256()
    images = [rel for rel, _, _ in files if rel.lower().endswith(IMAGE_SUFFIXES)]
    for rel in sorted(images, key=os.fsencode):  # LC_ALL=C sort: raw byte order
        hexdigest = known.get(rel) or _file_hash(root / rel, "sha256")
        h.update(_sha256sum_line(hexdigest, "./" + rel))
    return h.hexdigest()


def _sha256sum_line(hexdigest: str, name: str) -> bytes:
    """One line as GNU sha256sum prints it, escaping a name with a backslash or newline."""
    raw = os.fsencode(name)
    if b"\\" in raw or b"\n" in raw:
        escaped = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
        return b"\\" + hexdigest.encode() + b"  " + escaped + b"\n"
    return hexdigest.encode() + b"  " + raw + b"\n"


# ============================================================================================
# Image-folder layout: decode and cache
# ============================================================================================
# One cache entry per tree fingerprint: <cache_dir>/imagefolder-<fingerprint>/ holding
# {train,test}_{images,labels}.npy and meta.json (format, fingerprint, counts, sha256 of each
# array, content digest). meta.json is written last and is the entry's seal.

ENTRY_PREFIX = "imagefolder-"


def _resolve_imagefolder(root: Path, cache_root: Path, expected_counts: Mapping[str, int],
                         progress: Progress | None) -> DataSource:
    meta = _ensure_cache(root, cache_root, expected_counts, progress)[1]
    digest = meta["digest"]
    name = NAME_JPEG if digest == CIFAR10_JPEG_DIGEST else NAME_UNKNOWN_FOLDER
    return DataSource(kind="imagefolder", path=root, name=name, digest=digest)


def _load_imagefolder_split(source: DataSource, official: str, cache_root: Path,
                            expected_counts: Mapping[str, int],
                            progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """One official split of the content `source.digest` names, from the cache.

    When this process already validated the tree (resolve_source), the entry is reused without
    rescanning 60,000 files: the arrays are still checked against their recorded sha256, and
    they are the content the source was resolved to, whatever happened to the tree since.
    """
    entry = _VALIDATED_ENTRIES.get((str(cache_root), source.digest))
    if entry is not None:
        meta = _read_meta(entry)
        if _meta_problem(entry, meta) is None and meta["digest"] == source.digest:
            arrays = _read_cached_split(entry, meta, official)
            if arrays is not None:
                return arrays
    entry, meta = _ensure_cache(source.path, cache_root, expected_counts, progress)
    if meta["digest"] != source.digest:
        raise DatasetError(f"{source.path}: content changed since it was resolved (digest "
                           f"{meta['digest'][:12]}..., was {source.digest[:12]}...)")
    arrays = _read_cached_split(entry, meta, official)
    if arrays is None:  # contents fail their recorded sha256: rebuild, never trust
        _report(progress, f"discarding the cache at {entry}: {official} arrays fail their sha256")
        entry, meta = _build_cache(_scan_imagefolder(source.path, expected_counts), entry,
                                   progress)
        arrays = _read_cached_split(entry, meta, official)
    if arrays is None:
        raise DatasetError(f"{entry}: cache unreadable right after it was written")
    return arrays


# (cache root, content digest) -> cache entry, for entries validated against their tree in this
# process; lets load_split skip the tree scan that resolve_source just did.
_VALIDATED_ENTRIES: dict[tuple[str, str], Path] = {}


def _ensure_cache(root: Path, cache_root: Path, expected_counts: Mapping[str, int],
                  progress: Progress | None) -> tuple[Path, dict]:
    """The cache entry (directory, meta) for root's current files; built if absent or corrupt.

    The layout and counts are checked from the listing every time (cheap); images are decoded
    only when no sound entry exists.
    """
    tree = _scan_imagefolder(root, expected_counts)
    entry = cache_root / f"{ENTRY_PREFIX}{_fingerprint(tree)}"
    meta = _read_meta(entry)
    problem = "absent" if meta is None else _check_cache(entry, meta, tree)
    if problem is not None:
        if meta is not None:
            _report(progress, f"discarding the cache at {entry}: {problem}")
        entry, meta = _build_cache(tree, entry, progress)
    _VALIDATED_ENTRIES[(str(cache_root), meta["digest"])] = entry
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


def _check_cache(entry: Path, meta: dict, tree: _Tree) -> str | None:
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


def _build_cache(tree: _Tree, entry: Path, progress: Progress | None) -> tuple[Path, dict]:
    """Decode every image (validating each), write the arrays, then seal with meta.json.

    Each file goes through a temporary file and os.replace, and meta.json is removed first and
    written last: an interrupted build leaves no entry that a later run would trust.
    """
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").unlink(missing_ok=True)
    listed = [item for official in ("train", "test") for item in tree.images[official]]
    rels = [rel for rel, _ in listed]
    hashes: dict[str, str] = {}
    images = _decode_all(tree.root, rels, hashes, progress)
    labels = np.array([label for _, label in listed], dtype=np.int64)
    meta = {"format": CACHE_FORMAT, "fingerprint": entry.name[len(ENTRY_PREFIX):],
            "root": str(tree.root), "counts": {}, "sha256": {}}
    start = 0
    for official in ("train", "test"):
        stop = start + len(tree.images[official])
        for kind, array in (("images", images[start:stop]), ("labels", labels[start:stop])):
            _atomic_save(entry / f"{official}_{kind}.npy", array)
            meta["sha256"][f"{official}_{kind}"] = hashlib.sha256(array.data).hexdigest()
        meta["counts"][official] = stop - start
        start = stop
    meta["digest"] = _digest_from_hashes(tree.root, tree.files, hashes)
    _atomic_write(entry / "meta.json", json.dumps(meta, indent=1).encode())
    _report(progress, f"cached {len(rels):,} decoded images in {entry}")
    return entry, meta


def _decode_all(root: Path, rels: list[str], hashes: dict[str, str],
                progress: Progress | None) -> np.ndarray:
    """Decode `rels` into one (N, 32, 32, 3) array, recording each file's sha256 in `hashes`.

    One process: the 60,000-image copy takes about 7 s here, and a 2-worker Pool measured no
    faster on this 2-core box while adding spawn/fork hazards (an unguarded __main__ re-runs;
    forking a process with torch/TensorFlow threads can deadlock).
    """
    images = np.empty((len(rels), *IMAGE_SHAPE), dtype=np.uint8)
    paths = [str(root / rel) for rel in rels]
    for i, path in enumerate(paths):
        pixels, hexdigest = _decode_file(path)
        images[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(IMAGE_SHAPE)
        hashes[rels[i]] = hexdigest
        if (i + 1) % PROGRESS_EVERY == 0:
            _report(progress, f"decoded {i + 1:,} of {len(rels):,} images")
    return images


def _decode_file(path: str) -> tuple[bytes, str]:
    """Read one file once: its sha256 (for the digest) and its RGB pixels, strictly checked."""
    with open(path, "rb") as f:
        data = f.read()
    return _decode_bytes(data, path), hashlib.sha256(data).hexdigest()


def _decode_bytes(data: bytes, path: str) -> bytes:
    """32x32 RGB pixels of an encoded image; anything else is an error, never converted."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow: truncation would pass silently
        raise DatasetError(f"{path}: not decoded because PIL.ImageFile.LOAD_TRUNCATED_IMAGES is "
                           "on in this process, which accepts truncated images; turn it off")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode fully now: truncation raises here, not later
            mode, size = image.mode, image.size
            pixels = image.tobytes() if (mode, size) == ("RGB", (32, 32)) else None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc
    if pixels is None:
        raise DatasetError(f"{path}: image is {size[0]}x{size[1]} {mode}, expected 32x32 RGB")
    return pixels


# ============================================================================================
# Small helpers
# ============================================================================================

def _select_val(images: np.ndarray, labels: np.ndarray, held_out: bool):
    mask = np.zeros(len(labels), dtype=bool)
    mask[val_indices(labels)] = True
    keep = mask if held_out else ~mask
    return images[keep], labels[keep]


def _check_class_counts(labels: np.ndarray, per_class: int, where: str) -> None:
    counts = np.bincount(labels, minlength=len(CLASSES))
    wrong = [f"{CLASSES[c]} {counts[c]}" for c in range(len(CLASSES)) if counts[c] != per_class]
    if wrong:
        raise DatasetError(f"{where}: images per class {', '.join(wrong)}; expected {per_class} "
                           "each")


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with _atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)


def _atomic_write(path: Path, data: bytes) -> None:
    with _atomic_file(path) as f:
        f.write(data)


class _atomic_file:
    """Write to a temporary file beside `path`, then os.replace it: readers see old or new.

    The temporary name is made by hand rather than by tempfile.mkstemp, whose files are
    always mode 0600: a cache shared between users needs the umask's permissions.
    """

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")

    def __enter__(self):
        self.file = open(self.tmp, "xb")
        return self.file

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)  # the error itself propagates: nothing half-written is left
        return False


def _report(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)
