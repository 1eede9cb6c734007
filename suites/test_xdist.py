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
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fixtures.results import PROGRESS_FILE
from fixtures.robust import ROOT, Background, Finished, any_framework, child_env, python
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


# The child runs in `cwd` (a controller's own directory, where relative options resolve).
IN_DIRECTORY = "import os, sys, pytest; os.chdir(sys.argv[1]); sys.exit(pytest.main(sys.argv[2:]))"


def start_session(work: Path, cwd: Path, mode: str, *args: str) -> Background:
    """A child pytest session in `cwd`, in the background, with the targets' mode set."""
    work.mkdir(parents=True, exist_ok=True)
    command = python("-c", IN_DIRECTORY, str(cwd), "-p", "no:cacheprovider", "-rs",
                     *any_framework(), *args)
    return Background(command, work, child_env(**{TARGETS_ENV: mode}), SESSION_TIMEOUT_S)


def copy_project(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE)
    return dest


def only_targets(*selection: str) -> list[str]:
    """Workers collect only the targets file. Given as an ini override, not a path argument:
    xdist rewrites path arguments for gateways with another working directory."""
    return ["-o", f"testpaths={TARGETS}", *selection]


def assert_rows_came_home(result: Finished, results_dir: Path, worker_dirs: list[Path]):
    assert result.returncode == 0, result.describe()
    rows = read_rows([results_dir], on_error="raise")
    written = [r for r in rows if r.get("writer") != "benchmark"]
    pairs = sorted((r["writer"], r["seq"]) for r in written)
    assert pairs == sorted((w, s) for w in range(4) for s in range(5)), (
        f"expected each of {ROWS} rows once, got {pairs}\n{result.describe()}")
    assert len({r["row_id"] for r in rows}) == len(rows), "a row id occurs twice"
    [run_id] = {r["run_id"] for r in rows}      # one run, whatever process wrote the row
    assert {r["cwd"] for r in written} == {str(d) for d in worker_dirs}, (
        "the rows were not made by workers in each of the given directories")
    for directory in worker_dirs:   # nothing of this run left where the workers ran
        left = [r for r in read_rows([directory], on_error="skip", warn=lambda m: None)
                if r["run_id"] == run_id]
        assert not left, f"a worker wrote {len(left)} row(s) in {directory}"
    return rows


# -- the child sessions: what each runs ------------------------------------------------------
def _popen(work: Path) -> Background:
    """Two popen gateways, each in its own copy of the project; --results is relative, so each
    process would resolve it in its own working directory."""
    controller = copy_project(work / "controller")
    for i in (1, 2):
        copy_project(work / f"worker{i}")
    return start_session(work, controller, "rows", "--tx", f"popen//chdir={work / 'worker1'}",
                         "--tx", f"popen//chdir={work / 'worker2'}", "--dist", "load",
                         "--results=results", *only_targets("-k", "test_rows_travel_home"))


def _fake_accuracy(mode: str, *extra: str):
    def start(work: Path) -> Background:
        return start_session(work, ROOT, mode, "--device", "cpu", "--seeds", "3",
                             "--recipe", "lenet_sgd",
                             f"--results={work / 'results'}", *extra,
                             *only_targets("-k", "test_fake_training"))
    return start


def _refusal(work: Path) -> Background:
    return start_session(work, ROOT, "rows", "-n", "2", "-m", "benchmark", "--device", "cpu",
                         f"--results={work / 'results'}", "suites/test_throughput.py")


STARTERS = {"popen": _popen, "crash": _fake_accuracy("cells-crash", "-n", "2"),
            "low": _fake_accuracy("cells-low"), "refusal": _refusal,
            "shard1": _fake_accuracy("cells", "--shard", "1/2"),
            "shard2": _fake_accuracy("cells", "--shard", "2/2")}
NEEDS = {"test_popen_gateways_in_other_directories_send_rows_home": ["popen"],
         "test_a_crashed_run_is_named_and_fails_the_session": ["crash"],
         "test_a_failing_gate_fails_the_session_though_every_run_passed": ["low"],
         "test_benchmarks_with_colocated_workers_are_refused": ["refusal"],
         "test_shards_split_the_runs_and_their_rows_merge_without_double_counting":
             ["shard1", "shard2"]}


class Children:
    """The child sessions, all started together when the first is wanted, so that their
    framework imports overlap (under xdist, where a worker runs only some of this module's
    tests, each is started when wanted)."""

    def __init__(self, selected: set[str], base: Path):
        self.selected, self.base = selected, base
        self.started: dict[str, tuple[Path, Background]] = {}

    def _start(self, name: str) -> None:
        if name not in self.started:
            work = self.base / name
            self.started[name] = (work, STARTERS[name](work))

    def get(self, name: str) -> tuple[Path, Finished]:
        if not os.environ.get("PYTEST_XDIST_WORKER"):
            for test in self.selected:
                for needed in NEEDS.get(test, ()):
                    self._start(needed)
        self._start(name)
        work, child = self.started[name]
        return work, child.result()

    def kill(self) -> None:
        for _, child in self.started.values():
            child.kill()


@pytest.fixture(scope="module")
def children(request, tmp_path_factory):
    selected = {item.originalname for item in request.session.items
                if getattr(item, "module", None) is request.module}
    started = Children(selected, tmp_path_factory.mktemp("xdist-sessions"))
    yield started
    started.kill()


def test_popen_gateways_in_other_directories_send_rows_home(children):
    work, result = children.get("popen")
    rows = assert_rows_came_home(result, work / "controller" / "results",
                                 [work / "worker1", work / "worker2"])
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
    # The remote side's environment is ssh's, not ours: the targets' mode goes in the spec.
    spec = (f"ssh=twinbench-ssh-test//ssh_config={ssh_localhost}//python={python()[0]}"
            f"//chdir={remote}//env:{TARGETS_ENV}=rows")
    result = start_session(tmp_path / "session", controller, "rows", "--tx", spec,
                           "--dist", "each", "--results=results",
                           *only_targets("-m", "benchmark or not benchmark", "-k",
                                         "test_rows_travel_home or test_lone_worker_measures")
                           ).result()
    rows = assert_rows_came_home(result, controller / "results", [remote])
    measured = [r for r in rows if r.get("writer") == "benchmark"]
    assert len(measured) == 1 and measured[0]["benchmark_disabled"] is False, result.describe()
    assert {r["worker"]["on_host"] for r in rows} == {1}


# -- cells decided at the controller ----------------------------------------------------------
def test_a_crashed_run_is_named_and_fails_the_session(children):
    work, result = children.get("crash")
    assert result.returncode == TESTS_FAILED, result.describe()
    message = "seed 1 of torch/lenet_sgd on cpu has no row"
    assert message in result.stdout, result.describe()
    [verdict] = read_verdicts(work / "results")
    assert verdict["status"] == "incomplete" and verdict["seeds"] == [0, 1, 2]
    assert any(message in p for p in verdict["problems"]), verdict
    assert len(read_rows([work / "results"])) == 2     # the two runs that finished, each once
    # the workers' progress lines, where the session's header said they go
    log = work / "results" / PROGRESS_FILE
    assert f"append one line per epoch to {log}" in result.stdout, result.describe()
    lines = log.read_text().splitlines()
    assert sorted(line.split(" ", 2)[2] for line in lines) == [
        "fake run torch/lenet_sgd seed 0", "fake run torch/lenet_sgd seed 2"], lines
    assert all(line.split(" ")[1].startswith("gw") for line in lines), lines


def test_a_failing_gate_fails_the_session_though_every_run_passed(children):
    work, result = children.get("low")
    assert result.returncode == TESTS_FAILED, result.describe()
    assert "3 passed" in result.stdout, result.describe()
    assert "FAIL torch/lenet_sgd on cpu" in result.stdout, result.describe()
    assert [v["status"] for v in read_verdicts(work / "results")] == ["fail"]
    # without xdist the progress lines go to the terminal, and no file is written
    assert "fake run torch/lenet_sgd seed 1" in result.stdout, result.describe()
    assert not (work / "results" / PROGRESS_FILE).exists()


# -- benchmarks -------------------------------------------------------------------------------
def test_benchmarks_with_colocated_workers_are_refused(children):
    work, result = children.get("refusal")
    assert result.returncode == USAGE_ERROR, result.describe()
    for words in ("2 on this host", "distort", "--dist each", "reports compare"):
        assert words in result.stderr, result.describe()
    assert not (work / "results").exists()


# -- shards -----------------------------------------------------------------------------------
def test_shards_split_the_runs_and_their_rows_merge_without_double_counting(children, tmp_path,
                                                                            capsys):
    shards = []
    for name in ("shard1", "shard2"):
        work, result = children.get(name)
        assert result.returncode in (0, 5), result.describe()   # 5: this shard drew no run
        assert not (work / "results" / VERDICTS_FILE).exists(), "a shard decided a partial cell"
        shards.append(work / "results")
    present = [d for d in shards if d.exists()]
    seeds = [sorted(r["seed"] for r in read_rows([d])) for d in present]
    assert sorted(sum(seeds, [])) == [0, 1, 2], f"the shards ran seeds {seeds}"
    copy = tmp_path / "copy-of-a-shard"
    shutil.copytree(present[0], copy)
    code = cells_main(["--seeds", "3", "--write", str(tmp_path / "merged"), *map(str, present),
                       str(copy)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS torch/lenet_sgd on cpu: 3 run(s)" in out, out
    [verdict] = read_verdicts(tmp_path / "merged")
    assert verdict["status"] == "pass" and verdict["figures"]["n"] == 3
