"""The image-folder layout, ``train/<class>/*`` and ``test/<class>/*``: list and check the tree,
fingerprint it, digest its content, decode its images. Decoded arrays are kept by cache.py."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageFile

from twinbench.data.cifar10 import (CIFAR10_COUNTS, CLASSES, IMAGE_SHAPE, DatasetError, Progress,
                                    file_hash, report)

# Content digest (imagefolder_digest) of the JPEG re-encoded copy of CIFAR-10 that CI uses, as
# published with that copy (docs/methodology.md#data).
CIFAR10_JPEG_DIGEST = "c217601eebcfee757a51b381539a30bc3b0a89cac54850a81d992750b4fa8352"

# Source names are threshold keys (see canonical.py): only proven content gets a known name.
NAME_JPEG = "cifar10-jpeg"
NAME_UNKNOWN_FOLDER = "imagefolder-unknown"

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# OS droppings, ignored; any other unexpected file is an error.
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db"})

PROGRESS_EVERY = 10_000  # images between progress messages during a decode

# (POSIX path relative to the root, size, mtime_ns): a plain tuple, as 60,000 are made per scan.
FileInfo = tuple[str, int, int]


@dataclass(frozen=True)
class Tree:
    root: Path
    files: tuple[FileInfo, ...]  # every non-directory entry, for the fingerprint and digest
    images: Mapping[str, tuple[tuple[str, int], ...]]  # official split -> ((rel path, label), ...)


def source_name(digest: str) -> str:
    """The threshold key of a folder with this content digest."""
    return NAME_JPEG if digest == CIFAR10_JPEG_DIGEST else NAME_UNKNOWN_FOLDER


def imagefolder_digest(root: str | os.PathLike) -> str:
    """Content digest of an image folder: the integrity formula published with the JPEG copy,

        find . -type f -name '*.jpg' | LC_ALL=C sort | xargs sha256sum | sha256sum

    byte for byte, widened from *.jpg to every image file (.jpg/.jpeg/.png, any case) so that a
    PNG folder gets a real digest rather than the hash of nothing. For a tree whose images are
    all *.jpg (the JPEG copy) the result is exactly the formula's. File symlinks are followed.
    """
    root = Path(root)
    return digest_from_hashes(root, scan_tree(root), {})


# ============================================================================================
# Scan, validate, fingerprint
# ============================================================================================

def scan_tree(root: Path) -> tuple[FileInfo, ...]:
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


def scan_imagefolder(root: Path, expected_counts: Mapping[str, int]) -> Tree:
    """List and check the layout, file names and counts; decodes nothing."""
    files = scan_tree(root)
    by_dir: dict[str, list[str]] = {}
    for rel, _, _ in files:
        parent, _, name = rel.rpartition("/")
        by_dir.setdefault(parent, []).append(name)
    images = {official: _list_split(root, official, by_dir, expected_counts[official])
              for official in ("train", "test")}
    return Tree(root=root, files=files, images=MappingProxyType(images))


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


def fingerprint(tree: Tree, version: int) -> str:
    """Cache key: a hash of relative paths, sizes and mtimes; cheap, no file contents read.

    `version` is the cache format: a new format gives every tree a new key."""
    text = "".join(f"{rel}\t{size}\t{mtime_ns}\n" for rel, size, mtime_ns in tree.files)
    key = f"twinbench-imagefolder-cache v{version}\n{text}"
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def digest_from_hashes(root: Path, files: tuple[FileInfo, ...], known: Mapping[str, str]) -> str:
    """imagefolder_digest over `files`, reusing the sha256 hexes computed while decoding.

    An image file the decode did not read (one outside the class folders) is read here.
    """
    h = hashlib.sha256()
    images = [rel for rel, _, _ in files if rel.lower().endswith(IMAGE_SUFFIXES)]
    for rel in sorted(images, key=os.fsencode):  # LC_ALL=C sort: raw byte order
        hexdigest = known.get(rel) or file_hash(root / rel, "sha256")
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
# Decode
# ============================================================================================

def decode_all(root: Path, rels: list[str], hashes: dict[str, str],
               progress: Progress | None) -> np.ndarray:
    """Decode `rels` into one (N, 32, 32, 3) array, recording each file's sha256 in `hashes`.

    One process: the 60,000-image copy takes about 7 s here, and a 2-worker Pool measured no
    faster on this 2-core box while adding spawn/fork hazards (an unguarded __main__ re-runs;
    forking a process with torch/TensorFlow threads can deadlock).
    """
    images = np.empty((len(rels), *IMAGE_SHAPE), dtype=np.uint8)
    paths = [str(root / rel) for rel in rels]
    for i, path in enumerate(paths):
        pixels, hexdigest = decode_file(path)
        images[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(IMAGE_SHAPE)
        hashes[rels[i]] = hexdigest
        if (i + 1) % PROGRESS_EVERY == 0:
            report(progress, f"decoded {i + 1:,} of {len(rels):,} images")
    return images


def decode_file(path: str) -> tuple[bytes, str]:
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
