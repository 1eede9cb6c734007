"""Robustness and safety: a benchmark suite that crashes, hangs or silently drops a result
costs its users a night of GPU time. Each test injects one fault and checks the protection
that must hold:

1. import order: TensorFlow imported first (a plugin, a user's conftest) never segfaults an
   entry point; torch tests skip with the reason and the way out;
2. hostile data: a crafted pickle is refused before it is unpickled, by dataset and by result
   file (suites/test_data.py and test_reports.py test the library calls; these, the entry points);
3. faults: an interrupted writer, an unwritable or full results disk, an out-of-memory batch;
4. concurrency: four xdist workers writing rows at once;
5. bad options: each is a usage error (exit 4) naming the option and what it accepts;
6. determinism: --determinism switches each framework's deterministic ops on, two processes
   train bitwise-identical weights, and rows and header record it.

With one framework installed (the tox environments tf and torch) a test whose subject needs the
other skips with the reason naming it; a test whose subject is no framework's (hostile data,
the results directory, xdist, bad options) runs its child session on the installed one.

Most faults need a pytest session of their own. Those sessions (in "Child sessions" below) run
the targets in suites/test_robust_targets.py; every session the selected tests need is started
in the background when the first of them runs, so that their framework imports overlap (none
for a test that a mark skips, e.g. for an absent framework).
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fixtures import synthetic
from fixtures.robust import (ROOT, TARGETS_ENV, Background, Finished, any_framework, child_env,
                             complete_row, framework_params, installed_frameworks, mark_skips,
                             needs, python, throughput_fields)
from reports.__main__ import main as reports_main
from twinbench import imports
from twinbench.frameworks import unavailable_reason
from twinbench.frameworks.modes import modes_for
from twinbench.results import read_rows, write_row

TARGETS = "suites/test_robust_targets.py"
SAMPLES = ROOT / "fixtures" / "results" / "cpu-epyc-2core"
SESSION_TIMEOUT_S = 300     # a child session that takes longer has hung: it is killed, the test fails
USAGE_ERROR = 4             # pytest.ExitCode.USAGE_ERROR
SEGFAULT = (-signal.SIGSEGV, 128 + signal.SIGSEGV)
OOM_AT = 1024               # the benchmark session's batch that runs out of memory (injected)


# ==============================================================================================
# Child sessions: what each one runs
# ==============================================================================================
# TensorFlow first, then every entry point in this one process: `python -m reports render`,
# `python -m twinbench --help`, `scripts/recipe_speed.py --help`, and last a pytest session that
# collects every suite module and runs the train-step target in both frameworks. A segfault
# anywhere ends the process; the line printed before each entry point names the culprit.
TF_FIRST = r"""
import tensorflow  # first, as a pytest plugin or a user's conftest might import it
import json, runpy, sys
import pytest

out, samples, pytest_args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
codes = {}

def entry(name, argv, run):
    print(f"robustness: {name} with TensorFlow imported first", file=sys.stderr, flush=True)
    sys.argv = argv
    try:
        run()
        codes[name] = 0
    except SystemExit as exc:
        codes[name] = exc.code

entry("python -m reports render", ["reports", "render", samples, "--out", out + "/report"],
      lambda: runpy.run_module("reports", run_name="__main__", alter_sys=True))
entry("python -m twinbench --help", ["twinbench", "--help"],
      lambda: runpy.run_module("twinbench", run_name="__main__", alter_sys=True))
entry("scripts/recipe_speed.py --help", ["scripts/recipe_speed.py", "--help"],
      lambda: runpy.run_path("scripts/recipe_speed.py", run_name="__main__"))
codes["torchvision imported"] = "torchvision" in sys.modules
with open(out + "/entry_points.json", "w") as f:
    json.dump(codes, f)
print("robustness: pytest with TensorFlow imported first", file=sys.stderr, flush=True)
sys.exit(pytest.main(pytest_args))
"""

# Several pytest sessions in one process, each expected to stop with a usage error before it
# collects anything (one process: the framework imports are paid once). A case with
# "full_disk" sees 1 MiB free on every disk, through the free-space check's own call.
USAGE_ERRORS = r"""
import contextlib, io, json, shutil, sys
import pytest

cases = json.loads(sys.argv[1])
real_disk_usage = shutil.disk_usage
report = {}
for name, case in cases.items():
    if case.get("full_disk"):
        shutil.disk_usage = lambda path: real_disk_usage(path)._replace(free=2**20)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = pytest.main(case["args"])
    finally:
        shutil.disk_usage = real_disk_usage
    report[name] = {"code": int(code), "stdout": out.getvalue(), "stderr": err.getvalue()}
with open(sys.argv[2], "w") as f:
    json.dump(report, f)
"""

# A pytest plugin (-p) for the benchmark session: moving a batch of OOM_AT images or more to
# the device raises the framework's own out-of-memory error, as a too-small card would (torch:
# the adapter's prepare_data; TensorFlow: its to_tensor), in each --framework of the session.
# The device ceiling, not this test's subject, is a fixed figure: measuring it (sgemm 2048^3,
# best of 5, in every loaded framework) would cost the session more than all its steps.
OOM_PLUGIN = f"""
from twinbench import imports
from twinbench.frameworks import ceilings

def _fail_large_batches(cls, method, error):
    real = getattr(cls, method)

    def to_device(self, model, images, *rest):
        if len(images) >= {OOM_AT}:
            raise error()
        return real(self, model, images, *rest)
    setattr(cls, method, to_device)

def pytest_configure(config):
    ceilings.measure = lambda device: ceilings.Ceiling(
        device, 1e11, 1e10, "not measured: a fixed figure (injected by test_robustness)")
    frameworks = config.option.framework or ()
    if "torch" in frameworks:   # torch first: importing TensorFlow before it would segfault
        from twinbench.frameworks.torch_backend import TorchFramework
        _fail_large_batches(TorchFramework, "prepare_data", lambda: imports.torch().OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (injected by test_robustness)"))
    if "tf" in frameworks:
        from twinbench.frameworks.tf_backend import TensorFlowFramework
        _fail_large_batches(TensorFlowFramework, "to_tensor",
                            lambda: imports.tensorflow().errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[{OOM_AT},32,32,3] "
                        "(injected by test_robustness)"))
"""

BAD_OPTIONS = {   # case: (arguments, what the message must name)
    "framework": (["--framework", "mxnet"], ["--framework", "mxnet", "'tf'", "'torch'"]),
    "device": (["--device", "tpu"], ["--device", "tpu", "'cpu'", "'gpu'"]),
    "arch": (["--arch", "resnet50"], ["--arch", "resnet50", "'keras_cnn'", "'lenet'"]),
    "batch_size_zero": (["--batch-size", "0"], ["--batch-size", ">= 1", "got 0"]),
    "batch_size_negative": (["--batch-size", "-8"], ["--batch-size", ">= 1", "got -8"]),
    "seeds_zero": (["--seeds", "0"], ["--seeds", ">= 1", "got 0"]),
    "threads_zero": (["--threads", "0"], ["--threads", ">= 1", "got 0"]),
    "data_is_a_file": (["--data", "{file}"], ["--data", "{file}", "is a file", "directory"]),
}


@dataclass
class Session:
    work: Path          # the session's own directory
    out: Path           # what the targets left there (TWINBENCH_ROBUSTNESS_OUT)
    result: Finished

    def ran(self) -> list[str]:
        """The target test bodies that ran in this session."""
        ran = self.out / "ran"
        return sorted(p.name for p in ran.iterdir()) if ran.is_dir() else []


def pytest_args(work: Path, *extra: str) -> list[str]:
    return ["-p", "no:cacheprovider", "-rs", "--results", str(work / "results"),
            "--junitxml", str(work / "junit.xml"), *extra]


def _tf_first(work: Path) -> list[str]:
    samples = work / "samples"   # two sample rows: the import chain matters, not the size
    samples.mkdir()
    for pattern in ("accuracy-torch-lenet-*-s1-*.json", "throughput-tf-lenet-*-train-b32-*.json"):
        shutil.copy(next(SAMPLES.glob(pattern)), samples)
    args = pytest_args(work, "--device", "cpu", "--arch", "lenet",
                       "-k", "test_robust_targets and test_train_steps")   # collects every suite
    return python("-c", TF_FIRST, str(work), str(samples), json.dumps(args))


def _determinism(work: Path) -> list[str]:
    return python("-m", "pytest", *pytest_args(work, "--determinism", "--device", "cpu",
                                               "--arch", "lenet", "-k", "test_train_steps"),
                  TARGETS)


def _torch_without_determinism(work: Path) -> list[str]:
    """The torch train step without --determinism (tf_first has TensorFlow's, torch skipped)."""
    return python("-m", "pytest", *pytest_args(work, "--framework", "torch", "--device", "cpu",
                                               "--arch", "lenet", "-k", "test_train_steps"),
                  TARGETS)


def _hostile_data(work: Path) -> list[str]:
    """A canonical layout whose data_batch_1 runs code (creates `pwned`) when unpickled."""
    data = synthetic.write_canonical(work / "cifar-10-batches-py").root
    (data / "data_batch_1").write_bytes(pickle.dumps(synthetic.MarkerPickle(work / "pwned")))
    return python("-m", "pytest", *pytest_args(work, "--data", str(data), *any_framework()),
                  TARGETS)


def _results_under_file(work: Path) -> list[str]:
    (work / "not-a-directory").write_text("a regular file where --results needs a directory\n")
    return python("-m", "pytest", "-p", "no:cacheprovider", "-m", "accuracy", *any_framework(),
                  "--results", str(work / "not-a-directory" / "run"), TARGETS)


def _usage_errors(work: Path) -> list[str]:
    a_file = work / "cifar10.tar.gz"
    a_file.write_bytes(b"not a directory")
    cheap = ["-p", "no:cacheprovider", "--collect-only", "-q", *any_framework(), TARGETS]
    cases = {name: {"args": cheap + [a.format(file=a_file) for a in args]}
             for name, (args, _) in BAD_OPTIONS.items()}
    cases["full_disk"] = {"full_disk": True, "args": [
        "-p", "no:cacheprovider", "-m", "accuracy", *any_framework(),
        "--results", str(work / "results"), TARGETS]}
    return python("-c", USAGE_ERRORS, json.dumps(cases), str(work / "usage_errors.json"))


def _xdist(work: Path) -> list[str]:
    return python("-m", "pytest", "-n", "4", *pytest_args(work, *any_framework(),
                                                          "-k", "test_rows_written_concurrently"),
                  TARGETS)


def _oom(work: Path) -> list[str]:
    """Every installed framework, one after the other in this one session. One thread: a
    2-thread torch step on a loaded 2-core machine spins for 10-100x its time (bench.py)."""
    (work / "robust_oom_plugin.py").write_text(OOM_PLUGIN)
    frameworks = [a for f in installed_frameworks() for a in ("--framework", f)]
    return python("-m", "pytest", *pytest_args(
        work, "-p", "robust_oom_plugin", "-m", "benchmark", "--quick", *frameworks,
        "--threads", "1", "--device", "cpu", "--arch", "lenet", "--batch-size", str(OOM_AT),
        "--batch-size", "4", "-k", "test_throughput and train"), "suites/test_throughput.py")


SESSIONS = {"tf_first": _tf_first, "determinism_a": _determinism, "determinism_b": _determinism,
            "torch_without_determinism": _torch_without_determinism,
            "hostile_data": _hostile_data, "results_under_file": _results_under_file,
            "usage_errors": _usage_errors, "xdist": _xdist, "oom": _oom}

# The session that ran each framework's train-step target without --determinism: TensorFlow's
# comes free with tf_first. Asked for through the `determinism_off` fixture, by framework_id.
DETERMINISM_OFF = {"tf": "tf_first", "torch": "torch_without_determinism"}


def sessions_needed(item) -> set[str]:
    """The child sessions a collected test of this module will ask for: none if a mark skips it."""
    if mark_skips(item):
        return set()
    names = {name for name in item.fixturenames if name in SESSIONS}
    if "determinism_off" in item.fixturenames:
        names.add(DETERMINISM_OFF[item.callspec.params["framework_id"]])
    return names


class Sessions:
    def __init__(self, tmp_path_factory):
        self.factory = tmp_path_factory
        self.running: dict[str, tuple[Path, Background]] = {}

    def start(self, name: str) -> None:
        if name in self.running:
            return
        work = self.factory.mktemp(name)
        (work / "targets").mkdir()
        command = SESSIONS[name](work)
        env = child_env(**{TARGETS_ENV: str(work / "targets"),
                           "TWINBENCH_CACHE": str(work / "cache"),
                           "TWINBENCH_DATA_HOME": str(work / "data-home")})
        env["PYTHONPATH"] = os.pathsep.join([str(work), env["PYTHONPATH"]])   # for -p plugins
        self.running[name] = (work, Background(command, work, env, SESSION_TIMEOUT_S))

    def get(self, name: str) -> Session:
        self.start(name)
        work, process = self.running[name]
        return Session(work, work / "targets", process.result())

    def stop_all(self) -> None:
        for _, process in self.running.values():
            process.kill()      # any that a failed or deselected test never waited for
            process.result()    # closes its output files


@pytest.fixture(scope="module")
def sessions(request, tmp_path_factory):
    """Starts, now and all at once, every child session that this run's selected tests of this
    module ask for (a fixture named like the session), so that they overlap."""
    started = Sessions(tmp_path_factory)
    # Under xdist every worker holds every item but runs only some: start on demand there.
    prestart = [] if hasattr(request.config, "workerinput") else request.session.items
    for item in prestart:
        if getattr(item, "module", None) is request.module:
            for name in sorted(sessions_needed(item)):
                started.start(name)
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def tf_first(sessions):
    return sessions.get("tf_first")


@pytest.fixture(scope="module")
def determinism_a(sessions):
    return sessions.get("determinism_a")


@pytest.fixture(scope="module")
def determinism_b(sessions):
    return sessions.get("determinism_b")


@pytest.fixture
def determinism_off(sessions, framework_id):
    """The session that ran framework_id's train step without --determinism."""
    return sessions.get(DETERMINISM_OFF[framework_id])


@pytest.fixture(scope="module")
def hostile_data(sessions):
    return sessions.get("hostile_data")


@pytest.fixture(scope="module")
def results_under_file(sessions):
    return sessions.get("results_under_file")


@pytest.fixture(scope="module")
def usage_errors(sessions):
    session = sessions.get("usage_errors")
    assert session.result.returncode == 0, session.result.describe()
    return session, json.loads((session.work / "usage_errors.json").read_text())


@pytest.fixture(scope="module")
def xdist(sessions):
    return sessions.get("xdist")


@pytest.fixture(scope="module")
def oom(sessions):
    return sessions.get("oom")


def junit_outcomes(work: Path) -> dict[str, tuple[str, str]]:
    """test name -> (passed | skipped | failed | error, message) from the session's JUnit XML."""
    outcomes = {}
    for case in ET.parse(work / "junit.xml").getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("skipped", "failure", "error"):
            element = case.find(kind)
            if element is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = element.get("message", "")
        outcomes[case.get("name")] = (outcome, message)
    return outcomes


def header_run_id(stdout: str) -> str:
    match = re.search(r"^twinbench run (\S+): results", stdout, re.MULTILINE)
    assert match, f"no run id in the report header:\n{stdout[:2000]}"
    return match.group(1)


# ==============================================================================================
# 1. Import order
# ==============================================================================================

def _fake_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


NO_TORCH_TO_REFUSE = "no torch import to refuse"


@pytest.mark.parametrize("loaded, blocked_by", [
    pytest.param(("tensorflow",), "before torch", id="tf-first",
                 marks=needs("torch", why=NO_TORCH_TO_REFUSE)),
    pytest.param(("tensorflow", "torch"), "before torchvision", id="tf-before-torchvision",
                 marks=needs("torch", why=NO_TORCH_TO_REFUSE)),
    pytest.param(("torch", "torchvision", "tensorflow"), None, id="torch-first"),
])
def test_torch_is_refused_with_the_way_out_once_tensorflow_came_first(monkeypatch, loaded,
                                                                      blocked_by):
    """Both crashing orders (docs/methodology.md#import-order) are detected from sys.modules alone, before anything
    is imported; the reason tells the user to run the torch side in a separate process."""
    for name in ("tensorflow", "torch", "torchvision"):
        if name in loaded:
            monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or _fake_module(name))
        else:
            monkeypatch.delitem(sys.modules, name, raising=False)
    reason = imports.torch_blocked_reason()
    if blocked_by is None:
        assert reason is None
        return
    assert reason is not None and blocked_by in reason and "segfault" in reason
    assert "separate process" in reason and "--framework torch" in reason
    assert unavailable_reason("torch", "cpu") == reason   # what the framework fixture skips with
    with pytest.raises(RuntimeError, match="separate process"):
        imports.torch()


@needs("tf", why="nothing can import TensorFlow first")
def test_entry_points_survive_tensorflow_imported_first(tf_first):
    result = tf_first.result
    assert result.returncode not in SEGFAULT, "segfault:\n" + result.describe()
    assert result.returncode == 0, result.describe()
    codes = json.loads((tf_first.work / "entry_points.json").read_text())
    assert codes == {"python -m reports render": 0, "python -m twinbench --help": 0,
                     "scripts/recipe_speed.py --help": 0, "torchvision imported": False}, codes
    assert (tf_first.work / "report" / "report.md").is_file()
    # Every suite module was imported (collected) after TensorFlow, without an error.
    assert re.search(r"collected \d+ items / \d+ deselected / 2 selected", result.stdout), result.describe()
    assert "error" not in result.stdout.splitlines()[-1], result.describe()


@needs("tf", "torch", why="the torch tests skip for TensorFlow imported first only where both are")
def test_torch_tests_skip_with_the_reason_when_tensorflow_came_first(tf_first):
    assert tf_first.result.returncode == 0, tf_first.result.describe()
    outcomes = junit_outcomes(tf_first.work)
    assert outcomes["test_train_steps[tf-cpu-lenet]"] == ("passed", ""), outcomes
    outcome, message = outcomes["test_train_steps[torch-cpu-lenet]"]
    assert outcome == "skipped", outcomes
    assert "TensorFlow was imported before torch" in message and "separate process" in message
    assert "separate process" in tf_first.result.stdout   # -rs shows it in the summary


# ==============================================================================================
# 2. Hostile data
# ==============================================================================================

def test_crafted_dataset_pickle_stops_pytest_before_it_is_unpickled(hostile_data):
    result, marker = hostile_data.result, hostile_data.work / "pwned"
    assert not marker.exists(), "the crafted pickle ran: the dataset was unpickled unverified"
    assert result.returncode == USAGE_ERROR, result.describe()
    assert "md5" in result.stderr and "not unpickled" in result.stderr, result.describe()
    assert str(hostile_data.work / "cifar-10-batches-py") in result.stderr
    assert hostile_data.ran() == [], "tests ran on a dataset that failed its checksum"
    # The same bytes really are hostile: unpickled here, they create the marker.
    pickle.loads((hostile_data.work / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("protocol", [0, pickle.HIGHEST_PROTOCOL], ids=["ascii", "binary"])
def test_pickle_bytes_in_a_result_file_are_never_unpickled(tmp_path, capsys, protocol):
    """A .json result (or baseline) holding a code-running pickle: render names and skips it,
    the gate rejects it; neither runs it."""
    marker = tmp_path / "pwned"
    results = tmp_path / "results"
    for seq in range(2):
        write_row(results, complete_row(throughput_fields("torch", "lenet", 1000.0 + seq)))
    hostile = results / "throughput-torch-lenet-cpu-eager-train-b8-0000.json"
    hostile.write_bytes(pickle.dumps(synthetic.MarkerPickle(marker), protocol=protocol))

    code = reports_main(["render", str(results), "--out", str(tmp_path / "report")])
    render_err = capsys.readouterr().err
    assert code == 0 and str(hostile) in render_err and "skipped" in render_err, render_err
    assert "1 unreadable or invalid file(s) skipped" in (tmp_path / "report" / "report.md").read_text()

    code = reports_main(["gate", "--baseline", str(results), "--current", str(SAMPLES)])
    gate_err = capsys.readouterr().err
    assert code == 2 and str(hostile) in gate_err, gate_err
    assert not marker.exists(), "a result file was unpickled"
    pickle.loads(hostile.read_bytes())   # and it would have run code
    assert marker.exists()


# ==============================================================================================
# 3. Faults
# ==============================================================================================

WRITER = r"""
import json, sys, time
from twinbench.results import write_row
row = json.loads(sys.argv[2])
row["padding"] = "x" * int(sys.argv[3])   # a large row keeps each write in progress for a while
for seq in range(50):   # bounded: 200 MB at most, if the test never stops it
    write_row(sys.argv[1], {**row, "seq": seq})
# On a loaded machine the test can be descheduled between seeing a row half written and sending
# its signal, long enough for the last rows to finish: the writer then waits here, so the
# signal still stops it (a normal exit would say nothing about interrupted writes).
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_writer_keeps_every_earlier_row(tmp_path, sig):
    """Signal a writer of large rows while a row is half written (its temporary file exists):
    every row before it reads back complete and in order; SIGINT also leaves no temporary."""
    results = tmp_path / "results"
    padding = 4_000_000
    row = complete_row(throughput_fields("torch", "lenet", 1000.0))
    proc = subprocess.Popen(python("-c", WRITER, str(results), json.dumps(row), str(padding)),
                            cwd=ROOT, env=child_env())
    caught_mid_write = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            names = [e.name for e in os.scandir(results)] if results.is_dir() else []
            if sum(n.endswith(".json") for n in names) >= 3 and any(n.endswith(".tmp") for n in names):
                caught_mid_write = True
                break
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=60)
    assert caught_mid_write, (f"never saw a row being written (writer exit code "
                              f"{proc.returncode}): is write_row still writing a hidden .tmp first?")
    assert proc.returncode == -sig, "the writer was not stopped by the signal"

    rows = read_rows([results], on_error="raise")   # every .json parses and passes the schema
    seqs = sorted(r["seq"] for r in rows)
    assert len(seqs) >= 3 and seqs == list(range(len(seqs))), f"rows lost or out of order: {seqs}"
    assert all(r == {**row, "padding": "x" * padding, "seq": r["seq"]} for r in rows), (
        "a row changed on disk")
    leftovers = sorted(p.name for p in results.iterdir() if p.suffix != ".json")
    if sig == signal.SIGINT:
        assert leftovers == [], "KeyboardInterrupt left a temporary file behind"
    else:
        assert all(n.startswith(".") and n.endswith(".tmp") for n in leftovers), leftovers


def test_results_under_a_regular_file_stop_the_session_before_any_test(results_under_file):
    result = results_under_file.result
    assert result.returncode == USAGE_ERROR, result.describe()
    assert "results directory" in result.stderr and "cannot be created" in result.stderr
    assert str(results_under_file.work / "not-a-directory" / "run") in result.stderr
    assert results_under_file.ran() == [], "an accuracy test started with nowhere to write"


def test_full_disk_stops_the_session_before_any_test(usage_errors):
    session, report = usage_errors
    case = report["full_disk"]
    assert case["code"] == USAGE_ERROR, case
    assert "results directory" in case["stderr"] and "MiB free" in case["stderr"], case["stderr"]
    assert session.ran() == [], "a test started with a full results disk"
    assert not (session.work / "results").exists() or not any((session.work / "results").iterdir())


@pytest.mark.parametrize("framework_id", framework_params())
def test_out_of_memory_batch_is_recorded_and_the_run_goes_on(oom, framework_id):
    """The benchmark tier with a batch that runs out of memory (injected at the device copy)
    before one that fits: an "oom" row, a warning, the next configuration measured, exit 0."""
    result = oom.result
    assert result.returncode == 0, result.describe()
    rows = {r["batch_size"]: r for r in read_rows([oom.work / "results"], on_error="raise")
            if r["framework"] == framework_id}
    assert set(rows) == {OOM_AT, 4}, rows.keys()
    assert rows[OOM_AT]["status"] == "oom" and "injected" in rows[OOM_AT]["error"]
    assert rows[OOM_AT]["images_per_s"] == [] and rows[OOM_AT]["median_images_per_s"] is None
    assert rows[4]["status"] == "ok" and rows[4]["median_images_per_s"] > 0
    outcomes = {name: outcome for name, outcome in junit_outcomes(oom.work).items()
                if name.startswith(f"test_throughput[{framework_id}-")}
    assert [o for o, _ in outcomes.values()] == ["passed", "passed"], outcomes
    quick_mode = modes_for(framework_id, "cpu", quick=True)[0]   # the mode --quick measures
    oom_case = f"{framework_id}-cpu-lenet-{quick_mode}-train-b{OOM_AT}"
    assert f"BenchmarkOOMWarning: {oom_case}: out of memory" in result.stdout, result.describe()


# ==============================================================================================
# 4. Concurrency
# ==============================================================================================

def test_four_xdist_workers_lose_no_row(xdist):
    result = xdist.result
    assert result.returncode == 0, result.describe()
    files = list((xdist.work / "results").iterdir())
    assert len(files) == 40 and all(f.suffix == ".json" for f in files), sorted(f.name for f in files)
    rows = read_rows([xdist.work / "results"], on_error="raise")
    assert sorted((r["writer"], r["seq"]) for r in rows) == [(w, s) for w in range(4) for s in range(10)]
    assert {r["run_id"] for r in rows} == {header_run_id(result.stdout)}, "workers disagree on the run id"
    assert len({r["pid"] for r in rows}) >= 2, "the rows were not written by several workers"


# ==============================================================================================
# 5. Bad options
# ==============================================================================================

@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_is_a_usage_error_naming_the_option(usage_errors, case):
    session, report = usage_errors
    got = report[case]
    a_file = str(session.work / "cifar10.tar.gz")
    assert got["code"] == USAGE_ERROR, got
    for fragment in BAD_OPTIONS[case][1]:
        assert fragment.format(file=a_file) in got["stderr"], (fragment, got["stderr"])


# ==============================================================================================
# 6. Determinism
# ==============================================================================================

@pytest.mark.parametrize("framework_id", framework_params())
def test_determinism_option_switches_on_deterministic_ops(determinism_a, determinism_off,
                                                          framework_id):
    for session, on in ((determinism_a, True), (determinism_off, False)):
        assert session.result.returncode == 0, session.result.describe()
        flags = json.loads((session.out / f"flags-{framework_id}.json").read_text())
        assert flags == {"deterministic_ops": on, "determinism_option": on}, (on, flags)


@pytest.mark.parametrize("framework_id", framework_params())
def test_two_processes_train_bitwise_identical_weights(determinism_a, determinism_b,
                                                       framework_id):
    runs = []
    for session in (determinism_a, determinism_b):
        assert session.result.returncode == 0, session.result.describe()
        with np.load(session.out / f"weights-{framework_id}-lenet.npz") as w, \
                np.load(session.out / f"initial-{framework_id}-lenet.npz") as w0:
            runs.append(({k: w[k] for k in w.files}, {k: w0[k] for k in w0.files}))
    (a, a0), (b, b0) = runs
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].tobytes() == b[key].tobytes(), (
            f"{framework_id} {key}: max abs difference {np.max(np.abs(a[key] - b[key]))}")
    assert any(not np.array_equal(a[k], a0[k]) for k in a), "training did not change the weights"


@pytest.mark.parametrize("framework_id", framework_params())
def test_rows_and_header_record_determinism(determinism_a, determinism_off, framework_id):
    for session, on in ((determinism_a, True), (determinism_off, False)):
        assert session.result.returncode == 0, session.result.describe()
        assert f"determinism: {'on' if on else 'off'}" in session.result.stdout
        rows = read_rows([session.work / "results"], on_error="raise")
        assert any(r["framework"] == framework_id for r in rows), [r["framework"] for r in rows]
        assert all(r["determinism"] is on for r in rows), [r["determinism"] for r in rows]
