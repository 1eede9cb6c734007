"""The default data source: the canonical archive fetched with the standard library, both md5
checks enforced with nothing half-written left behind, and a source that cannot be fetched
stopping a pytest session before any test with one message that says how to use a local copy.

No network is needed: archives are synthetic (fixtures/synthetic.py) and served by file:// URLs;
"unreachable" is a closed port on this machine.
"""
from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fixtures import synthetic
from fixtures.robust import ROOT, any_framework, child_env
from twinbench import data
from twinbench.data import download

# Generous for one pytest session on a loaded 2-core box; it normally ends within seconds.
SESSION_TIMEOUT_S = 300


@pytest.fixture
def archive(tmp_path):
    """(url, Synthetic, md5) of a small archive laid out as the canonical release."""
    path = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    s, md5 = synthetic.write_canonical_archive(path)
    return path.as_uri(), s, md5


def refuse_to_fetch(url, *args, **kwargs):
    raise AssertionError(f"tried to download {url}")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to fetch a URL fails the test."""
    monkeypatch.setattr(urllib.request, "urlopen", refuse_to_fetch)


def closed_port_url() -> str:
    """An http:// URL on this machine where nothing listens: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def leftovers(root: Path) -> list[str]:
    """Everything under root except complete canonical files: temporary or partial files."""
    allowed = {data.CANONICAL_DIRNAME, *(f"{data.CANONICAL_DIRNAME}/{n}" for n in data.CANONICAL_MD5)}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.relative_to(root).as_posix() not in allowed)


def assert_tells_how_to_use_a_local_copy(message: str) -> None:
    assert "--data PATH" in message and "TWINBENCH_DATA" in message
    assert "cifar-10-batches-py" in message and "train/<class>/" in message  # both layouts


# ==============================================================================================
# download_canonical
# ==============================================================================================

def test_download_unpacks_exactly_the_archived_files(archive, tmp_path):
    url, s, md5 = archive
    root = tmp_path / "home"
    batches = download.download_canonical(root, url=url, archive_md5=md5, checksums=s.checksums)
    assert batches == root / data.CANONICAL_DIRNAME
    assert leftovers(root) == [], "temporary files or readme.html left behind"
    source = data.resolve_source(batches, expected_counts=s.counts, checksums=s.checksums)
    ds = data.load_split(source, "trainval", expected_counts=s.counts, checksums=s.checksums)
    np.testing.assert_array_equal(ds.images, s.train.images)
    np.testing.assert_array_equal(ds.labels, s.train.labels)


def test_corrupt_archive_is_refused_and_nothing_is_unpacked(archive, tmp_path):
    url, s, md5 = archive
    path = Path(url.removeprefix("file://"))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    root = tmp_path / "home"
    with pytest.raises(data.DatasetError, match="md5") as info:
        download.download_canonical(root, url=url, archive_md5=md5, checksums=s.checksums)
    message = str(info.value)
    assert url in message and md5 in message and "nothing was unpacked" in message
    assert_tells_how_to_use_a_local_copy(message)
    assert leftovers(root) == [] and not (root / data.CANONICAL_DIRNAME).exists()


def test_archived_file_failing_its_md5_is_not_put_in_place(archive, tmp_path):
    url, s, md5 = archive
    expected = {**s.checksums, "test_batch": "0" * 32}
    root = tmp_path / "home"
    with pytest.raises(data.DatasetError, match="test_batch in the archive has md5") as info:
        download.download_canonical(root, url=url, archive_md5=md5, checksums=expected)
    assert s.checksums["test_batch"] in str(info.value)
    assert not (root / data.CANONICAL_DIRNAME / "test_batch").exists()
    assert leftovers(root) == [], "a temporary file was left behind"


def test_archive_lacking_a_file_is_refused(tmp_path):
    s = synthetic.write_canonical(tmp_path / "contents" / data.CANONICAL_DIRNAME)
    (s.root / "batches.meta").unlink()
    path = tmp_path / "short.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(s.root, arcname=data.CANONICAL_DIRNAME)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(data.DatasetError, match="lacks") as info:
        download.download_canonical(tmp_path / "home", url=path.as_uri(), archive_md5=md5,
                                    checksums=s.checksums)
    assert "batches.meta" in str(info.value)


def test_unreachable_url_is_one_clear_error(tmp_path):
    url = closed_port_url()
    root = tmp_path / "home"
    with pytest.raises(data.DatasetError) as info:
        download.download_canonical(root, url=url)
    message = str(info.value)
    assert message.startswith(f"could not download CIFAR-10 from {url}: ")
    assert_tells_how_to_use_a_local_copy(message)
    assert leftovers(root) == []


# ==============================================================================================
# The default source: where it comes from, and when it is fetched
# ==============================================================================================

def test_default_source_follows_the_mirror_variable_once(archive, tmp_path, monkeypatch):
    url, s, md5 = archive
    monkeypatch.setenv("TWINBENCH_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(download.URL_ENV, url)
    monkeypatch.setattr(download, "CANONICAL_TGZ_MD5", md5)
    messages = []
    first = data.resolve_source(None, expected_counts=s.counts, checksums=s.checksums,
                                progress=messages.append)
    assert first.path == tmp_path / "home" / data.CANONICAL_DIRNAME
    assert any(url in m for m in messages), messages
    monkeypatch.setattr(urllib.request, "urlopen", refuse_to_fetch)
    again = data.resolve_source(None, expected_counts=s.counts, checksums=s.checksums)
    assert again == first


def test_a_given_path_is_never_downloaded(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TWINBENCH_DATA_HOME", str(tmp_path / "empty-home"))
    s = synthetic.write_canonical(tmp_path / "canonical")
    assert data.resolve_source(s.root, expected_counts=s.counts, checksums=s.checksums)
    with pytest.raises(data.DatasetError, match="does not exist"):
        data.resolve_source(tmp_path / "nowhere")
    assert not (tmp_path / "empty-home").exists()


def test_download_imports_no_framework(archive, tmp_path):
    url, s, md5 = archive
    code = ("import sys; from pathlib import Path; from twinbench.data import download; "
            f"download.download_canonical(Path(sys.argv[1]), url={url!r}, archive_md5={md5!r}, "
            f"checksums={s.checksums!r}); "
            "print(sorted({'torch', 'torchvision', 'tensorflow', 'keras'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "home")], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ==============================================================================================
# A pytest session without --data on a machine where the download fails
# ==============================================================================================

def test_session_without_data_stops_before_any_test_when_download_fails(tmp_path):
    url = closed_port_url()
    env = child_env(HOME=str(tmp_path / "home"), TWINBENCH_CACHE=str(tmp_path / "cache"),
                    **{download.URL_ENV: url})
    env.pop("TWINBENCH_DATA_HOME", None)  # the default copy under the temporary HOME
    # suites/test_pipeline.py needs the data: without --data the session must fetch it.
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           *any_framework(), "suites/test_pipeline.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=SESSION_TIMEOUT_S)
    output = proc.stdout + proc.stderr
    where = f"exit code {proc.returncode}\n{output[-4000:]}"
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, where
    assert output.count(f"could not download CIFAR-10 from {url}") == 1, where
    assert_tells_how_to_use_a_local_copy(output)
    assert "Traceback" not in output, where
    assert not re.search(r"\d+ (passed|failed|skipped|errors?)\b", output), where
    home = tmp_path / "home"
    assert [p for p in home.rglob("*") if p.is_file()] == [], "the failed download left files"


def test_collect_only_with_data_given_never_downloads(tmp_path):
    """--collect-only skips the configure-time check of --data; the collection hook must still
    take the given path as an answer, not fetch the default copy."""
    url = closed_port_url()
    data = tmp_path / "local-copy"   # never read under --collect-only
    data.mkdir()
    env = child_env(HOME=str(tmp_path / "home"), TWINBENCH_CACHE=str(tmp_path / "cache"),
                    **{download.URL_ENV: url})
    env.pop("TWINBENCH_DATA_HOME", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--collect-only", f"--data={data}", *any_framework(),
                           "suites/test_pipeline.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=SESSION_TIMEOUT_S)
    output = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.OK, output[-4000:]
    assert "could not download" not in output and "downloading" not in output, output[-4000:]
