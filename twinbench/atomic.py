"""Atomic file writes, shared by the result rows and the decoded-array cache.

A reader of `path` sees the old file or the complete new one, never a part: the data goes to a
hidden temporary file in the same directory (so the rename cannot cross file systems), is
flushed and fsync'ed, then renamed over `path` with os.replace (atomic on POSIX), and the
directory is fsync'ed so that the rename itself survives a crash. On any error, Ctrl-C
included, the temporary file is removed and the error propagates: nothing half-written is left.
A process killed outright can leave only a hidden `.<name>.<pid>.<random>.tmp` file, which
readers ignore (they look for `*.json` / `*.npy` by name).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write; it replaces `path` when the block ends without an error.

    The temporary name is made by hand rather than by tempfile.mkstemp, whose files are always
    mode 0600: a cache or results directory shared between users needs the umask's permissions.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_file)."""
    with atomic_file(path) as file:
        file.write(data)


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename in `directory` durable (POSIX); platforms without O_DIRECTORY skip this."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
