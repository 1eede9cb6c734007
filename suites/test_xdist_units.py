"""The rules behind scale-out, without a worker, a GPU or a second machine
(docs/methodology.md#scale-out): threads per worker, the GPU each worker sees, the hosts of a
session, which mark expressions select benchmarks, shards, row deduplication, and the cell
verdicts (missing, duplicated and mismatched rows)."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

from fixtures.shards import parse_shard, shard_of
from fixtures.workers import benchmark_selected
from twinbench import workers
from twinbench.cells import (ACCURACY, ARM_MATRIX, FAIL, INCOMPLETE, MATRIX, PASS, SKIPPED,
                             RunSpec, decide, expected_from_rows, read_verdicts, write_verdicts)
from twinbench.results import dedupe_rows
from twinbench.train import Epoch, Run

DATA = SimpleNamespace(name="cifar10-jpeg", digest="synthetic")


# -- threads and GPUs -------------------------------------------------------------------------
@pytest.mark.parametrize("cores, on_host, expected", [
    (16, 1, 16), (16, 4, 4), (16, 3, 5),   # the remainder stays idle: no oversubscription
    (2, 2, 1), (2, 4, 1),                  # never fewer than one thread
])
def test_threads_are_the_hosts_cores_divided_between_its_workers(cores, on_host, expected):
    assert workers.threads_per_worker(cores, on_host) == expected


def test_threads_refuse_nonsense():
    with pytest.raises(ValueError, match="workers >= 1"):
        workers.threads_per_worker(8, 0)


def test_each_worker_sees_one_gpu_from_its_index(tmp_path):
    gpus = tmp_path / "gpus"
    for bus in ("0000:01:00.0", "0000:02:00.0", "0000:03:00.0"):
        (gpus / bus).mkdir(parents=True)
    env = {workers.WORKER_ENV: "gw4"}
    assert workers.pin_gpu(env, gpus) == "1" and env[workers.CUDA_ENV] == "1"   # 4 mod 3
    # A user's own CUDA_VISIBLE_DEVICES is divided, never widened.
    env = {workers.WORKER_ENV: "gw1", workers.CUDA_ENV: "2,5"}
    assert workers.pin_gpu(env, gpus) == "5" and env[workers.CUDA_ENV] == "5"


@pytest.mark.parametrize("env, gpus, why", [
    ({}, 3, "not an xdist worker"),
    ({workers.WORKER_ENV: "gw0"}, 1, "one GPU: nothing to divide"),
    ({workers.WORKER_ENV: "gw0"}, 0, "no GPU"),
    ({workers.WORKER_ENV: "gw0", workers.CUDA_ENV: "3"}, 3, "the user chose one GPU"),
])
def test_the_gpu_setting_is_left_alone(tmp_path, env, gpus, why):
    for i in range(gpus):
        (tmp_path / str(i)).mkdir()
    before = dict(env)
    assert workers.pin_gpu(env, tmp_path) is None, why
    assert env == before, why


def test_hosts_of_a_session():
    specs = ["2*popen", "popen//chdir=/tmp/a", "ssh=-p 2222 me@gpu-a//python=/x/python",
             "ssh=gpu-b", "ssh=gpu-b//chdir=/w", "socket=10.0.0.9:8888"]
    assert workers.workers_per_host(specs) == {
        workers.LOCAL_HOST: 3, "me@gpu-a": 1, "gpu-b": 2, "10.0.0.9": 1}


@pytest.mark.parametrize("markexpr, selected", [
    ("benchmark", True), ("benchmark and not gpu", True), ("not accuracy", True), ("", True),
    ("not accuracy and not matrix and not benchmark and not slow", False),   # pytest.ini's
    ("accuracy", False), ("matrix or accuracy", False), ("benchmark and not benchmark", False),
])
def test_which_mark_expressions_select_benchmarks(markexpr, selected):
    assert benchmark_selected(markexpr) is selected


# -- shards -----------------------------------------------------------------------------------
def test_shards_partition_the_items_by_node_id():
    ids = [f"suites/test_matrix.py::test_x[lenet-lenet_sgd-tf-cpu-seed{s}]" for s in range(200)]
    parts = [[i for i in ids if shard_of(i, 4) == k] for k in (1, 2, 3, 4)]
    assert sorted(sum(parts, [])) == sorted(ids)          # every item in exactly one shard
    assert all(20 <= len(p) <= 80 for p in parts), [len(p) for p in parts]   # none starved
    # Pinned from the code itself (a SHA-256 of the id): the split must not depend on the
    # process, the machine or PYTHONHASHSEED.
    assert [shard_of(i, 4) for i in ids[:6]] == [3, 3, 1, 3, 2, 1]


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2"])
def test_bad_shards_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="i/N|must be in"):
        parse_shard(text)


# -- cells ------------------------------------------------------------------------------------
def row(kind, framework, seed, accuracy, *, arch="lenet", recipe="lenet_sgd", weights="w",
        row_id=None):
    run = Run(framework, "cpu", arch, recipe, seed, epochs=[Epoch(1, 1.0, accuracy, 1.0)],
              initial_weights=f"{weights}{seed}")
    r = {**run.row(50_000, DATA), "run_id": "r", "row_id": row_id or f"{framework}{seed}{kind}"}
    if kind == MATRIX:
        r["comparison"] = MATRIX
    return r


def specs(kind, frameworks, seeds):
    return [RunSpec(kind, fw, "lenet", "lenet_sgd", "cpu", s) for fw in frameworks for s in seeds]


def test_a_cell_passes_and_fails_on_its_gate():
    good = [row(ACCURACY, "torch", s, a) for s, a in enumerate((0.61, 0.62, 0.60))]
    [verdict] = decide(specs(ACCURACY, ["torch"], range(3)), good)
    assert verdict.status == PASS and "3 run(s)" in verdict.text
    # Far under the 58% threshold: a failure under any rule of thresholds.py.
    low = [row(ACCURACY, "torch", s, a) for s, a in enumerate((0.50, 0.52, 0.51))]
    [verdict] = decide(specs(ACCURACY, ["torch"], range(3)), low)
    assert verdict.status == FAIL, verdict.text


def test_a_missing_run_is_named_never_a_smaller_n():
    rows = [row(ACCURACY, "torch", s, 0.61) for s in (0, 2)]
    expected = specs(ACCURACY, ["torch"], range(4))
    [verdict] = decide(expected, rows, outcomes={expected[3]: "its test failed (call)"})
    assert verdict.status == INCOMPLETE
    assert verdict.problems == [
        "seed 1 of torch/lenet_sgd on cpu has no row: the run failed or was interrupted",
        "seed 3 of torch/lenet_sgd on cpu has no row: its test failed (call)"]


def test_two_rows_for_one_run_are_not_counted_twice():
    rows = [row(ACCURACY, "torch", 0, 0.61), row(ACCURACY, "torch", 0, 0.70, row_id="other")]
    [verdict] = decide(specs(ACCURACY, ["torch"], [0]), rows)
    assert verdict.status == INCOMPLETE and "has 2 rows" in verdict.problems[0]


def test_a_cell_whose_runs_all_skipped_is_skipped():
    expected = specs(ACCURACY, ["torch"], range(2))
    [verdict] = decide(expected, [], skipped={s: "skipped: no GPU" for s in expected})
    assert verdict.status == SKIPPED and "no GPU" in verdict.text


def test_the_matrix_pairs_seeds_and_checks_the_shared_start():
    # Three identical pairs (no gap) and three 9-point gaps: clear under any rule of
    # thresholds.py, the prior-spread band or an equivalence test on the pairs' own spread.
    expected = specs(MATRIX, ["tf", "torch"], range(3))
    rows = [row(MATRIX, fw, s, 0.61) for fw in ("tf", "torch") for s in range(3)]
    [verdict] = decide(expected, rows)
    assert verdict.status == PASS and verdict.figures["n_pairs"] == 3, verdict.text
    far = [row(MATRIX, "tf", s, 0.70) for s in range(3)] + rows[3:]
    assert decide(expected, far)[0].status == FAIL
    apart = rows[:1] + [row(MATRIX, "tf", 1, 0.61, weights="other")] + rows[2:]
    [verdict] = decide(expected, apart)
    assert verdict.status == INCOMPLETE
    assert "seed 1: tf and torch started from different weights" in verdict.problems[0]


def test_an_arm_beside_the_matrix_is_a_cell_of_its_own():
    """--arm: the arm's matrix runs check their start against TensorFlow's, seed by seed; the
    TensorFlow-vs-torch verdict is decided as without them; an arm that skipped everywhere
    (not installed) leaves the matrix cell decided and its own cell skipped."""
    pair = [row(MATRIX, fw, s, 0.61) for fw in ("tf", "torch") for s in range(3)]
    arm = [row(MATRIX, "keras-torch", s, 0.60) for s in range(3)]
    expected = specs(MATRIX, ["tf", "torch", "keras-torch"], range(3))

    def decide_both(rows, **kw):   # (the matrix cell's verdict, the arm's)
        verdicts = {v.cell[0]: v for v in decide(expected, rows, **kw)}
        assert len(verdicts) == 2
        return verdicts[MATRIX], verdicts[ARM_MATRIX]
    matrix, beside = decide_both(pair + arm)
    assert matrix.cell == (MATRIX, "lenet", "lenet_sgd", "cpu")
    assert matrix.status == PASS and matrix.figures["n_pairs"] == 3, matrix.text
    assert matrix.figures == decide(specs(MATRIX, ["tf", "torch"], range(3)), pair)[0].figures
    assert beside.cell == (ARM_MATRIX, "keras-torch", "lenet", "lenet_sgd", "cpu")
    assert beside.status == PASS and "3 run(s) from TensorFlow's initial weights" in beside.text
    assert beside.label == "keras-torch beside matrix lenet/lenet_sgd on cpu"
    apart = arm[:2] + [row(MATRIX, "keras-torch", 2, 0.60, weights="other")]
    _, beside = decide_both(pair + apart)
    assert beside.status == INCOMPLETE
    assert "seed 2: keras-torch and tf started from different weights" in beside.problems[0]
    _, beside = decide_both(pair + arm[:2])
    assert beside.status == INCOMPLETE
    assert beside.problems == ["seed 2 of keras-torch beside matrix lenet/lenet_sgd on cpu has no row: "
                               "the run failed or was interrupted"]
    arm_specs = [s for s in expected if s.framework == "keras-torch"]
    matrix, beside = decide_both(
        pair, skipped={s: "skipped: keras-torch: keras not installed" for s in arm_specs})
    assert matrix.status == PASS and beside.status == SKIPPED
    gathered = expected_from_rows(pair + arm[:1], seeds=3)
    assert sorted(gathered) == sorted(expected)


def test_arms_add_runs_only_when_selected():
    """Without --arm the tiers' runs are what they were; each --arm adds its accuracy runs of
    the recipes gated in TensorFlow (keras_cnn_adam, not the torch program lenet_sgd) and its
    matrix runs of every cell, same seeds; no matrix (one framework selected), no arm runs."""
    from fixtures.cells import accuracy_runs, matrix_runs
    s = SimpleNamespace(frameworks=("tf", "torch"), arms=(), devices=("cpu",), seeds=2,
                        arches=("keras_cnn", "lenet"), matrix_recipes=("keras_cnn_adam", "lenet_sgd"))
    plain_accuracy, plain_matrix = accuracy_runs(s)[0], matrix_runs(s)[0]
    assert {r.framework for r in plain_accuracy + plain_matrix} == {"tf", "torch"}
    s.arms = ("keras-torch", "keras-jax")
    accuracy, matrix = accuracy_runs(s)[0], matrix_runs(s)[0]
    assert [r for r in accuracy if r.framework in ("tf", "torch")] == plain_accuracy
    assert sorted((r.framework, r.recipe, r.seed) for r in accuracy if r.framework in s.arms) == [
        (arm, "keras_cnn_adam", seed) for arm in ("keras-jax", "keras-torch") for seed in (0, 1)]
    assert [r for r in matrix if r.framework in ("tf", "torch")] == plain_matrix
    assert len([r for r in matrix if r.framework in s.arms]) == 2 * 2 * 2 * 2   # arms x cells x seeds
    s.frameworks = ("torch",)
    assert matrix_runs(s)[0] == []


def test_an_arm_is_gated_like_the_tensorflow_twin():
    """The accuracy tier's arm runs form their own cell, gated by the recipe's threshold."""
    rows = [row(ACCURACY, "keras-jax", s, a, arch="keras_cnn", recipe="keras_cnn_adam")
            for s, a in enumerate((0.69, 0.68, 0.70))]
    expected = [RunSpec(ACCURACY, "keras-jax", "keras_cnn", "keras_cnn_adam", "cpu", s)
                for s in range(3)]
    [verdict] = decide(expected, rows)
    assert verdict.cell[1] == "keras-jax" and verdict.status == PASS, verdict.text
    from twinbench.thresholds import threshold
    assert f"threshold {threshold('cifar10-jpeg', 'keras_cnn_adam'):.1%}" in verdict.text


def test_gathered_rows_are_deduplicated_and_expected_per_cell(tmp_path):
    rows = [row(MATRIX, "tf", 0, 0.6), row(ACCURACY, "torch", 1, 0.6)]
    old = {k: v for k, v in row(ACCURACY, "torch", 2, 0.6).items() if k != "row_id"}
    unique = dedupe_rows(rows + [dict(r) for r in rows] + [old, dict(old)])
    assert len(unique) == 3   # by row id, and by content for rows written before row ids
    expected = expected_from_rows(unique, seeds=2)
    assert len(expected) == 2 * 2 + 2   # matrix: both frameworks x 2 seeds; accuracy: 2 seeds
    verdicts = decide(expected, unique)
    write_verdicts(tmp_path, verdicts)
    assert [v["status"] for v in read_verdicts(tmp_path)] == [v.status for v in verdicts]


def test_read_rows_counts_each_run_once_however_often_its_file_is_passed(tmp_path):
    """Shards gathered into one place, or one directory named twice, never count a run twice."""
    import shutil

    from twinbench.results import read_rows
    samples = Path(__file__).resolve().parent.parent / "reports" / "samples" / "cpu-box"
    copy = tmp_path / "copy"
    shutil.copytree(samples, copy)
    once = read_rows([samples])
    assert len(read_rows([samples, samples, copy])) == len(once) > 0


# -- scripts/workers_vs_threads.py: co-located workers against one process --------------------
def _workers_vs_threads():
    from fixtures.scripts import load_script
    return load_script("workers_vs_threads")


def test_the_two_sessions_differ_only_in_how_the_cores_are_spread(tmp_path):
    script = _workers_vs_threads()
    serial = script.session_command("lenet_sgd", 4, 2, False, tmp_path / "s", "DATA")
    parallel = script.session_command("lenet_sgd", 4, 2, True, tmp_path / "p", "DATA")
    assert serial[serial.index("--threads") + 1] == "2" and "-n" not in serial
    assert parallel[parallel.index("-n") + 1] == "2"
    assert parallel[parallel.index("--threads") + 1] == "1"
    rest = [a for a in serial if a not in ("--threads", "2", f"--results={tmp_path / 's'}")]
    assert rest == [a for a in parallel
                    if a not in ("-n", "2", "--threads", "1", f"--results={tmp_path / 'p'}")]
    assert "--data=DATA" in serial and serial[serial.index("--seeds") + 1] == "4"


def test_the_table_gives_the_wall_clock_ratio_and_names_a_failed_session():
    script = _workers_vs_threads()
    serial = {"wall": 600.0, "rc": 0, "train": [100.0, 110.0, 120.0, 130.0]}
    parallel = {"wall": 400.0, "rc": 1, "train": [190.0, 200.0, 210.0]}
    line = script.table_row("lenet_sgd", 4, serial, parallel)
    assert line == ["lenet_sgd", "4", "4", "3 (pytest exit 1)", "600", "400", "1.50x",
                    "115", "200"]
    assert len(line) == len(script.HEADERS)


def test_one_seed_or_one_core_is_refused():
    script = _workers_vs_threads()
    for argv in (["--seeds", "1"], ["--cores", "1"]):
        with pytest.raises(SystemExit) as e:
            script.main(argv)
        assert e.value.code == 2


# -- scripts/memory_per_run.py: what a worker keeps between runs ------------------------------
def test_memory_per_run_reads_this_processes_resident_size_and_refuses_nonsense():
    from fixtures.scripts import load_script
    script = load_script("memory_per_run")
    if not Path("/proc/self/status").exists():
        pytest.skip("reads /proc/self/status, which this OS does not have")
    before = script.resident_mb()
    ballast = bytearray(64 * 1024 * 1024)   # 64 MiB, touched below so that it is resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert script.resident_mb() >= before + 60
    del ballast
    for argv in (["--framework", "torch", "--runs", "1"], ["--framework", "torch", "--images", "10"]):
        with pytest.raises(SystemExit) as e:
            script.main(argv)
        assert e.value.code == 2
