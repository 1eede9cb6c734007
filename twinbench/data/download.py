"""The default data: the canonical CIFAR-10 release, fetched once with the standard library.

No framework is imported (urllib + tarfile do the work), so the data layer never touches the
torch-before-TensorFlow import order. Two md5 checks protect the copy: the archive as a whole
against the published md5, then each batch file as it is unpacked against CANONICAL_MD5
(and the loader checks each file again before unpickling it). A file that fails its check is
never put in place; the archive itself is a hidden temporary file, removed on success and on
failure.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path

from twinbench import atomic
from twinbench.data.canonical import CANONICAL_MD5, checked_checksums
from twinbench.data.cifar10 import CANONICAL_DIRNAME, LAYOUT_HELP, DatasetError, Progress, report

CANONICAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# A mirror of the same archive (http://, https:// or file://); it is md5-checked all the same.
URL_ENV = "TWINBENCH_CIFAR10_URL"
CANONICAL_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"  # as torchvision's datasets/cifar.py lists it
# Seconds a connection may stay silent before the download is abandoned: a stalled server must
# stop the run with an error rather than hang it.
DOWNLOAD_TIMEOUT_S = 60

LOCAL_COPY_HELP = ("to use a local copy instead, pass --data PATH or set TWINBENCH_DATA=PATH "
                   f"({LAYOUT_HELP}); to use a mirror of the archive, set {URL_ENV}")


def default_data_dir() -> Path:
    """Where the canonical copy lives or is downloaded to: $TWINBENCH_DATA_HOME or ~/.cache/..."""
    env = os.environ.get("TWINBENCH_DATA_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "twinbench" / "data"


def download_url() -> str:
    """$TWINBENCH_CIFAR10_URL, else the release's own address."""
    return os.environ.get(URL_ENV) or CANONICAL_URL


def default_canonical_dir(download: bool, checksums: Mapping[str, str] | None,
                          progress: Progress | None) -> Path:
    """The canonical copy under default_data_dir(), downloading it first when allowed."""
    batches = default_data_dir() / CANONICAL_DIRNAME
    if all((batches / name).is_file() for name in CANONICAL_MD5):
        return batches
    if not download:
        raise DatasetError(f"no CIFAR-10 at {batches} and download is off; {LOCAL_COPY_HELP}")
    return download_canonical(default_data_dir(), checksums=checksums, progress=progress)


def download_canonical(root: Path, *, url: str | None = None, archive_md5: str | None = None,
                       checksums: Mapping[str, str] | None = None,
                       progress: Progress | None = None) -> Path:
    """Fetch the archive from `url` (default: download_url()), check it, unpack the seven
    canonical files into root/cifar-10-batches-py and return that directory.

    `archive_md5` and `checksums` replace CANONICAL_TGZ_MD5 and CANONICAL_MD5 (for synthetic
    archives in tests). Every failure is a DatasetError that says what failed and how to use a
    local copy instead.
    """
    url = url or download_url()
    archive_md5 = archive_md5 or CANONICAL_TGZ_MD5
    expected = checked_checksums(checksums)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create {root} to download CIFAR-10 into: {exc}; set "
                           f"TWINBENCH_DATA_HOME to a writable directory, or {LOCAL_COPY_HELP}"
                           ) from exc
    report(progress, f"downloading CIFAR-10 from {url} into {root}")
    archive = root / f".cifar-10-python.tar.gz.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        actual = _fetch(url, archive)
        if actual != archive_md5:
            raise DatasetError(f"could not download CIFAR-10 from {url}: the archive's md5 is "
                               f"{actual}, expected {archive_md5} (corrupt, or not the canonical "
                               f"release); nothing was unpacked; {LOCAL_COPY_HELP}")
        batches = root / CANONICAL_DIRNAME
        _unpack(archive, batches, expected, url)
    finally:
        archive.unlink(missing_ok=True)
    report(progress, f"CIFAR-10 downloaded and verified in {batches}")
    return batches


def _fetch(url: str, destination: Path) -> str:
    """Stream `url` into `destination` (a new file); the md5 of what was received."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                open(destination, "xb") as out:
            return _copy_hashing(response, out)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # URLError (no route, refused, unknown host), HTTPError, a timeout, a malformed URL,
        # a full disk: all stop the run with the reason.
        raise DatasetError(f"could not download CIFAR-10 from {url}: {_why(exc)}; "
                           f"{LOCAL_COPY_HELP}") from exc


def _why(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _unpack(archive: Path, batches: Path, expected: Mapping[str, str], origin: str) -> None:
    """Put the seven canonical files of `archive` into `batches`, each md5-checked as it is
    copied (one pass over the compressed stream); a file that fails is never put in place."""
    wanted = {f"{CANONICAL_DIRNAME}/{name}": name for name in CANONICAL_MD5}
    unpacked = set()
    try:
        batches.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None:  # readme.html and the like
                    continue
                if not member.isfile():
                    raise DatasetError(f"{origin}: {member.name} in the archive is not a regular "
                                       "file; nothing of it was unpacked")
                with tar.extractfile(member) as source, atomic.atomic_file(batches / name) as out:
                    actual = _copy_hashing(source, out)
                    if actual != expected[name]:  # raised inside: the file is not put in place
                        raise DatasetError(f"{origin}: {member.name} in the archive has md5 "
                                           f"{actual}, expected {expected[name]}; not unpacked")
                unpacked.add(name)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"unpacking CIFAR-10 from {origin} into {batches} failed: {exc}; "
                           f"{LOCAL_COPY_HELP}") from exc
    missing = sorted(set(wanted.values()) - unpacked)
    if missing:
        raise DatasetError(f"{origin}: the archive lacks {CANONICAL_DIRNAME}/"
                           f"{{{','.join(missing)}}}; it is not the canonical CIFAR-10 release")


def _copy_hashing(source, out) -> str:
    """Copy `source` to `out` in 1 MiB chunks; the md5 of what was copied."""
    h = hashlib.md5()
    for chunk in iter(lambda: source.read(1 << 20), b""):
        h.update(chunk)
        out.write(chunk)
    return h.hexdigest()
