"""scripts/pack_images.py: the one-file copy of an image folder that travels to a GPU machine."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from fixtures.synthetic import write_imagefolder
from twinbench.data import imagefolder_digest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def packer():
    spec = importlib.util.spec_from_file_location("pack_images", ROOT / "scripts" / "pack_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_round_trip_is_byte_identical(packer, tmp_path):
    write_imagefolder(tmp_path / "src", suffix=".jpg")
    archive = tmp_path / "packed.npz"
    n = packer.pack(tmp_path / "src", archive)
    assert packer.unpack(archive, tmp_path / "dst") == n > 0
    assert imagefolder_digest(tmp_path / "dst") == imagefolder_digest(tmp_path / "src")


def test_corrupt_archive_is_refused(packer, tmp_path):
    write_imagefolder(tmp_path / "src", suffix=".jpg")
    archive = tmp_path / "packed.npz"
    packer.pack(tmp_path / "src", archive)
    with np.load(archive) as z:
        parts = {k: z[k] for k in z.files}
    parts["blob"] = parts["blob"].copy()
    parts["blob"][100] ^= 0xFF
    np.savez(archive, **parts)
    with pytest.raises(SystemExit, match="corrupt"):
        packer.unpack(archive, tmp_path / "dst")


def test_paths_outside_the_target_are_refused(packer, tmp_path):
    blob = np.frombuffer(b"x", dtype=np.uint8)
    np.savez(tmp_path / "evil.npz", names=np.array(["../escaped.jpg"]),
             offsets=np.array([0, 1]), blob=blob,
             sha256=np.array(hashlib.sha256(b"x").hexdigest()))
    with pytest.raises(SystemExit, match="unsafe path"):
        packer.unpack(tmp_path / "evil.npz", tmp_path / "dst")
    assert not (tmp_path / "escaped.jpg").exists()
