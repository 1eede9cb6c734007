"""Pack an image-folder dataset into one file, and unpack it, byte for byte.

The GPU machine receives only the working tree (64 MiB) and 60,000 small files do not
travel well; their JPEG bytes packed into one .npz are about 56 MB and unpack in seconds.
Unpacked, the tree is identical (same relative paths, same bytes), so it resolves to the
same content digest and the same accuracy thresholds as the original.

    python scripts/pack_images.py pack ../shared/datasets/cifar10-jpeg .gpu-data/cifar10-jpeg.npz
    python scripts/pack_images.py unpack .gpu-data/cifar10-jpeg.npz /tmp/cifar10-jpeg
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

SUFFIXES = (".jpg", ".jpeg", ".png")


def pack(root: Path, archive: Path) -> int:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                   and p.relative_to(root).parts[0] in ("train", "test"))
    if not files:
        raise SystemExit(f"pack: no images under {root}/train or {root}/test")
    blobs = [p.read_bytes() for p in files]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    blob = np.frombuffer(b"".join(blobs), dtype=np.uint8)
    names = np.array([str(p.relative_to(root).as_posix()) for p in files])
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp.npz")
    np.savez(tmp, names=names, offsets=offsets, blob=blob,
             sha256=np.array(hashlib.sha256(blob.tobytes()).hexdigest()))
    tmp.replace(archive)
    return len(files)


def unpack(archive: Path, root: Path) -> int:
    with np.load(archive, allow_pickle=False) as z:      # arrays only: no pickled objects
        names, offsets, blob = z["names"], z["offsets"], z["blob"]
        expected = str(z["sha256"])
    if hashlib.sha256(blob.tobytes()).hexdigest() != expected:
        raise SystemExit(f"unpack: {archive} is corrupt (sha256 of its contents does not match)")
    for i, name in enumerate(names):
        rel = Path(str(name))
        if rel.is_absolute() or ".." in rel.parts:
            raise SystemExit(f"unpack: {archive} holds an unsafe path {name!r}")
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob[offsets[i]:offsets[i + 1]].tobytes())
    return len(names)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("pack")
    a.add_argument("root", type=Path)
    a.add_argument("archive", type=Path)
    b = sub.add_parser("unpack")
    b.add_argument("archive", type=Path)
    b.add_argument("root", type=Path)
    args = p.parse_args(argv)
    if args.command == "pack":
        print(f"packed {pack(args.root, args.archive):,} images into {args.archive}")
    else:
        print(f"unpacked {unpack(args.archive, args.root):,} images into {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
