"""Length-prefixed NumPy .npz messages over a byte stream (a pipe to a worker process).

One message is an 8-byte big-endian length, then that many bytes of an uncompressed .npz
archive: a flat dict of names to arrays. Strings and scalars travel as 0-d arrays, nested
dicts (weights, gradients) as names with a prefix ("w:conv1/kernel"). Archives are read with
allow_pickle=False, so neither side can run code the other sends: NumPy is the boundary.

Imports nothing but NumPy: a worker loads it before choosing its framework.
"""
from __future__ import annotations

import io
import struct
from typing import BinaryIO

import numpy as np

_LENGTH = struct.Struct(">Q")


class ChannelClosed(EOFError):
    """The other end closed the stream (cleanly between messages, or mid-message)."""


def send(stream: BinaryIO, message: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in message.items()})
    payload = buffer.getvalue()
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise ChannelClosed(f"stream closed with {left} of {n} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(stream: BinaryIO) -> dict[str, np.ndarray]:
    """The next message; ChannelClosed if the stream ends (before or inside a message)."""
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    with np.load(io.BytesIO(_read_exactly(stream, length)), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def pack(prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{name: array} -> {prefix + name: array}, to carry a dict inside a message."""
    return {prefix + name: array for name, array in arrays.items()}


def unpack(prefix: str, message: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of `message` whose names start with `prefix`, without it (order kept)."""
    return {name[len(prefix):]: array for name, array in message.items() if name.startswith(prefix)}


def text(message: dict[str, np.ndarray], name: str) -> str:
    return str(message[name].item())
