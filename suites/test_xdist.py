"""Scale-out on pytest-xdist (docs/methodology.md#scale-out), each shown by a pytest session of
its own running the synthetic targets in suites/xdist_targets.py (no training):

1. rows come home: workers in other working directories (two popen gateways, each in its own
   copy of the project) and a worker behind a real ssh gateway to localhost write no row
   themselves; every row lands once in the controller's results directory;
2. cells: a run whose worker crashed is named in the verdict and fails the session; a gate
   that fails fails the session although every item passed;
3. benchmarks: several workers on one host are refused before any test; a worker alone on its
   host measures (pytest-benchmark switched back on);
4. shards: two `--shard i/2` sessions run disjoint parts, and their rows, gathered with a
   duplicated copy, decide each cell over each run exactly once.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.robust import ROOT, any_framework, child_env, python
from twinbench.cells import VERDICTS_FILE, read_verdicts
from twinbench.cells import main as cells_main
from twinbench.results import read_rows

TARGETS = "suites/xdist_targets.py"   # not test_*.py: only these sessions collect it
TARGETS_ENV = "TWINBENCH_XDIST_TARGETS"
SESSION_TIMEOUT_S = 300      # a child session that takes longer has hung: the test fails
SSHD_START_S = 10            # sshd listens within a fraction of a second; this is generous
USAGE_ERROR, TESTS_FAILED = 4, 1
ROWS = 4 * 5                 # xdist_targets: WRITERS x ROWS_PER_WRITER
# A copy of the project stands for a checkout on another host: everything but VCS data,
# caches and earlier results.
COPY_IGNORE = shutil.ignore_patterns(".*", "__pycache__", "*.pyc", "results", "out", "data")


def run_session(cwd: Path, mode: str, *args: str) -> subprocess.CompletedProcess:
    """A child pytest session in `cwd` with the targets' mode set; its output on failure."""
    env = child_env(**{TARGETS_ENV: mode})
    command = python("-m", "pytest", "-p", "no:cacheprovider", "-rs", *any_framework(), *args)
    try:
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child session hung (>{SESSION_TIMEOUT_S} s): {' '.join(command)}\n"
                    f"{exc.stdout}\n{exc.stderr}")


def describe(result: subprocess.CompletedProcess) -> str:
    return (f"command: {' '.join(result.args)}\nexit code: {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-4000:]}")


def copy_project(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def only_targets(*selection: str) -> list[str]:
    """Workers collect only the targets file. Given as an ini override, not a path argument:
    xdist rewrites path arguments for gateways with another working directory."""
    return ["-o", f"testpaths={TARGETS}", *selection]


def json_files(directory: Path) -> set[Path]:
    return {p.relative_to(directory) for p in directory.rglob("*.json")}


def assert_rows_came_home(result, results_dir: Path, worker_dirs: list[Path], before: dict):
    assert result.returncode == 0, describe(result)
    rows = read_rows([results_dir], on_error="raise")
    written = [r for r in rows if r.get("writer") != "benchmark"]
    pairs = sorted((r["writer"], r["seq"]) for r in written)
    assert pairs == sorted((w, s) for w in range(4) for s in range(5)), (
        f"expected each of {ROWS} rows once, got {pairs}\n{describe(result)}")
    assert len({r["row_id"] for r in rows}) == len(rows), "a row id occurs twice"
    assert len({r["run_id"] for r in rows}) == 1, "the workers' rows carry different run ids"
    assert {r["cwd"] for r in written} == {str(d) for d in worker_dirs}, (
        "the rows were not written by workers in each of the given directories")
    for directory in worker_dirs:   # nothing left behind where the workers ran
        assert json_files(directory) == before[directory], f"a worker wrote rows in {directory}"
        assert not (directory / "results").exists(), f"a worker made a results dir in {directory}"
    return rows


def test_popen_gateways_in_other_directories_send_rows_home(tmp_path):
    controller = copy_project(tmp_path / "controller")
    workers = [copy_project(tmp_path / f"worker{i}") for i in (1, 2)]
    before = {d: json_files(d) for d in workers}
    # --results is relative: each process would resolve it in its own working directory.
    result = run_session(controller, "rows", "--tx", f"popen//chdir={workers[0]}",
                         "--tx", f"popen//chdir={workers[1]}", "--dist", "load",
                         "--results=results", *only_targets("-k", "test_rows_travel_home"))
    rows = assert_rows_came_home(result, controller / "results", workers, before)
    assert {r["worker"]["id"] for r in rows} == {"gw0", "gw1"}
    # Two workers on this host share its cores (twinbench/workers.threads_per_worker).
    assert {r["worker"]["on_host"] for r in rows} == {2}


# -- a real ssh gateway -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ssh_localhost(tmp_path):
    """A throwaway sshd on a free localhost port (temporary host key, temporary authorized
    key, this user only), and the ssh_config that reaches it as host `twinbench-ssh-test`."""
    sshd, keygen = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:" + os.environ.get(
        "PATH", "")), shutil.which("ssh-keygen")
    if not sshd or not keygen or not shutil.which("ssh"):
        pytest.skip("no sshd can be started: openssh-server and openssh-client are not "
                    "installed (Debian: apt-get install openssh-server)")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host_key", "user_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
                       check=True, capture_output=True)
    shutil.copy(keys / "user_key.pub", keys / "authorized_keys")
    port = _free_port()
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host_key'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPidFile {keys / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n")
    if os.geteuid() == 0:   # root's sshd wants its privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(keys / "sshd.log", "w+")
    daemon = subprocess.Popen([sshd, "-D", "-e", "-f", str(keys / "sshd_config")],
                              stdout=log, stderr=subprocess.STDOUT)
    config = keys / "ssh_config"
    config.write_text(
        f"Host twinbench-ssh-test\n  HostName 127.0.0.1\n  Port {port}\n"
        f"  User {getpass.getuser()}\n  IdentityFile {keys / 'user_key'}\n  IdentitiesOnly yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n"
        "  LogLevel ERROR\n")
    try:
        deadline = time.monotonic() + SSHD_START_S
        while True:
            probe = subprocess.run(["ssh", "-F", str(config), "twinbench-ssh-test", "true"],
                                   capture_output=True, text=True, timeout=SSHD_START_S)
            if probe.returncode == 0:
                break
            if daemon.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.skip(f"no sshd could be started on 127.0.0.1:{port}: ssh said "
                            f"{probe.stderr.strip()!r}; sshd said {log.read().strip()[-500:]!r}")
            time.sleep(0.2)
        yield config
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)
        log.close()


def test_ssh_gateway_sends_rows_home_and_a_lone_worker_measures(tmp_path, ssh_localhost):
    controller = copy_project(tmp_path / "controller")
    remote = copy_project(tmp_path / "remote")
    before = {remote: json_files(remote)}
    # The remote side's environment is ssh's, not ours: the targets' mode goes in the spec.
    spec = (f"ssh=twinbench-ssh-test//ssh_config={ssh_localhost}//python={python()[0]}"
            f"//chdir={remote}//env:{TARGETS_ENV}=rows")
    result = run_session(controller, "rows", "--tx", spec, "--dist", "each", "--results=results",
                         *only_targets("-m", "benchmark or not benchmark",
                                       "-k", "test_rows_travel_home or test_lone_worker_measures"))
    rows = assert_rows_came_home(result, controller / "results", [remote], before)
    measured = [r for r in rows if r.get("writer") == "benchmark"]
    assert len(measured) == 1 and measured[0]["benchmark_disabled"] is False, describe(result)
    assert {r["worker"]["on_host"] for r in rows} == {1}


# -- cells decided at the controller ----------------------------------------------------------
def test_a_crashed_run_is_named_and_fails_the_session(tmp_path):
    results = tmp_path / "results"
    result = run_session(ROOT, "cells-crash", "-n", "2", "--device", "cpu", "--seeds", "3",
                         f"--results={results}", *only_targets("-k", "test_fake_training"))
    assert result.returncode == TESTS_FAILED, describe(result)
    message = "seed 1 of torch/lenet_sgd on cpu has no row"
    assert message in result.stdout, describe(result)
    [verdict] = read_verdicts(results)
    assert verdict["status"] == "incomplete" and verdict["seeds"] == [0, 1, 2]
    assert any(message in p for p in verdict["problems"]), verdict
    assert len(read_rows([results])) == 2     # the two runs that finished, each once


def test_a_failing_gate_fails_the_session_though_every_run_passed(tmp_path):
    results = tmp_path / "results"
    result = run_session(ROOT, "cells-low", "--device", "cpu", "--seeds", "3",
                         f"--results={results}", *only_targets("-k", "test_fake_training"))
    assert result.returncode == TESTS_FAILED, describe(result)
    assert "3 passed" in result.stdout, describe(result)
    assert "FAIL torch/lenet_sgd on cpu" in result.stdout, describe(result)
    assert [v["status"] for v in read_verdicts(results)] == ["fail"]


# -- benchmarks -------------------------------------------------------------------------------
def test_benchmarks_with_colocated_workers_are_refused(tmp_path):
    result = run_session(ROOT, "rows", "-n", "2", "-m", "benchmark", "--device", "cpu",
                         f"--results={tmp_path / 'results'}", "suites/test_throughput.py")
    assert result.returncode == USAGE_ERROR, describe(result)
    for words in ("2 on this host", "distort", "--dist each", "reports compare"):
        assert words in result.stderr, describe(result)
    assert not (tmp_path / "results").exists()


# -- shards -----------------------------------------------------------------------------------
def test_shards_split_the_runs_and_their_rows_merge_without_double_counting(tmp_path, capsys):
    shards = []
    for index in (1, 2):
        results = tmp_path / f"shard{index}"
        result = run_session(ROOT, "cells", "--device", "cpu", "--seeds", "3",
                             "--shard", f"{index}/2", f"--results={results}",
                             *only_targets("-k", "test_fake_training"))
        assert result.returncode in (0, 5), describe(result)   # 5: this shard drew no run
        assert not (results / VERDICTS_FILE).exists(), "a shard decided a partial cell"
        shards.append(results)
    seeds = [sorted(r["seed"] for r in read_rows([d])) if d.exists() else [] for d in shards]
    assert sorted(seeds[0] + seeds[1]) == [0, 1, 2], f"shards ran seeds {seeds}"
    copy = tmp_path / "copy-of-shard1"
    if shards[0].exists():
        shutil.copytree(shards[0], copy)
    else:
        shutil.copytree(shards[1], copy)
    gathered = [str(d) for d in (*shards, copy) if d.exists()]
    code = cells_main(["--seeds", "3", "--write", str(tmp_path / "merged"), *gathered])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS torch/lenet_sgd on cpu: 3 run(s)" in out, out
    [verdict] = read_verdicts(tmp_path / "merged")
    assert verdict["figures"]["n"] == 3
    assert json.loads(json.dumps(verdict))["status"] == "pass"
