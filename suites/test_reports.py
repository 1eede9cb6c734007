"""Tests of the results store (twinbench.results, twinbench.fingerprint) and the reports CLI.

No framework is needed: rows are synthetic (fixed seeds) or the committed sample fixtures.
The CLI is called in-process through `reports.__main__.main(argv)`, which returns the exit
code; one test runs the real `python -m reports` entry point.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reports.__main__ import main
from reports.compare import framework_ratio_table, machine_results, resolve_base, speedup_table
from reports.gate import MIN_ROUNDS, gate_decision
from twinbench.fingerprint import hardware_id, hardware_label, machine_fingerprint
from twinbench.results import (SCHEMA, ResultError, check_writable, new_run_id, read_rows,
                               validate_row, write_row)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "fixtures" / "results"
CPU_SAMPLE = SAMPLES / "cpu-epyc-2core"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Gate self-tests: rounds per configuration and their noise. 5% CV is the low end of what
# FACTS.md measured between timed blocks on the H100 (4.7-7.7%).
ROUNDS = 20
NOISE_CV = 0.05


# --------------------------------------------------------------------------------------
# Synthetic rows
# --------------------------------------------------------------------------------------

def fake_machine(cpu_model="AMD EPYC 7B13", cores=2, memory_gb=23.5, gpus=()):
    fp = {"cpu_model": cpu_model, "cores": cores, "cpu_count": cores, "memory_gb": memory_gb,
          "os": "Linux 6.1", "python": "3.11.7",
          "gpu": [{"name": g, "driver": "550.54.15", "memory_gb": 79.6} for g in gpus],
          "cuda": "13.0" if gpus else None, "cudnn": None, "git_commit": "unknown",
          "git_dirty": None}
    fp["id"] = hardware_id(fp)
    return fp


def throughput_row(machine, rounds, *, framework="torch", arch="keras_cnn", device="cpu",
                   mode="eager", phase="train", batch_size=32, status="ok", run_id="run-1"):
    ok = status == "ok"
    median = sorted(rounds)[len(rounds) // 2] if ok else None
    return {"schema": SCHEMA, "kind": "throughput", "run_id": run_id,
            "created": "2026-11-26T10:00:00+00:00", "framework": framework, "arch": arch,
            "device": device, "versions": {"python": "3.11.7"}, "machine": machine,
            "determinism": False, "mode": mode, "phase": phase, "batch_size": batch_size,
            "status": status, "error": None if ok else "CUDA out of memory",
            "images_per_s": list(rounds) if ok else [], "median_images_per_s": median,
            "flop_per_image": 27.3e6, "flops_per_s": None, "ceiling_flops_per_s": None,
            "fraction_of_ceiling": None, "compile_s": None, "threads": 2,
            "precision": {"tf32": False, "autocast": None}}


def noisy_rounds(rng, median, n=ROUNDS, cv=NOISE_CV):
    """Lognormal rounds: multiplicative noise, positive, with about `cv` relative spread."""
    return [median * rng.lognormvariate(0.0, cv) for _ in range(n)]


# Configurations of a small benchmark matrix, with typical medians (img/s).
GATE_CONFIGS = [
    (dict(framework="torch", arch="keras_cnn", batch_size=32), 800.0),
    (dict(framework="tf", arch="keras_cnn", mode="eager", batch_size=32), 1100.0),
    (dict(framework="torch", arch="lenet", batch_size=4), 1100.0),
    (dict(framework="tf", arch="lenet", mode="eager", batch_size=4), 450.0),
    (dict(framework="torch", arch="lenet", phase="infer", batch_size=256), 15000.0),
]


def write_matrix(directory, machine, seed, *, slowdown=0.0, n=ROUNDS):
    rng = random.Random(seed)
    for config, median in GATE_CONFIGS:
        rounds = noisy_rounds(rng, median * (1 - slowdown), n=n)
        write_row(directory, throughput_row(machine, rounds, **config))
    return directory


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------
# render
# --------------------------------------------------------------------------------------

def test_render_sample_writes_markdown_html_and_pngs(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "render", SAMPLES, "--out", out_dir)
    assert code == 0, err
    md = (out_dir / "report.md").read_text()
    # Hand-computed from the sample: TF Keras CNN training at batch 32 has median 1,100 img/s;
    # x 27.3 MFLOP per image = 30.0 GFLOP/s; / 32 GFLOP/s ceiling = 93.8%.
    line = next(l for l in md.splitlines()
                if l.startswith("| tf ") and "| keras_cnn " in l and "| graph " in l
                and "| train " in l and "|      32 |" in l)
    assert "1,100" in line and "30.0" in line and "93.8%" in line
    assert "| torch       | lenet     | cpu      | eager    | train   | fp32        |       4 |" in md
    assert "NOT measurements" in md  # the sample fixtures say what they are
    # The summary goes to stdout: TF Keras CNN accuracy median of 66.5, 65.1, 66.0 -> 66.0%.
    assert "65.9% ± 0.7 (65.1%-66.5%)" in out   # mean and sample std of 65.1, 66.0, 66.5
    # each run's 95% interval on 10,000 test images (Wilson): 66.5% -> 65.6%-67.4%
    cells = [[c.strip() for c in line.split("|")] for line in md.splitlines()]
    assert any("66.5%" in row and "65.6%-67.4%" in row for row in cells)
    assert "1,150 (graph, batch 256)" in out
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["accuracy-keras_cnn_adam.png", "accuracy-lenet_sgd.png",
                    "throughput-keras_cnn-infer.png", "throughput-keras_cnn-train.png",
                    "throughput-lenet-infer.png", "throughput-lenet-train.png"]
    for name in pngs:
        assert (out_dir / name).read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name})" in md
    html = (out_dir / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "1,100" in html
    assert 'src="throughput-keras_cnn-train.png"' in html  # relative, so the folder can move


def test_render_names_and_skips_malformed_and_invalid_files(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(CPU_SAMPLE, results)
    broken = results / "broken.json"
    broken.write_text('{"schema": "twinbench.result/1", "kind": ')
    invalid = results / "nested" / "invalid.json"
    invalid.parent.mkdir()
    row = json.loads(next(CPU_SAMPLE.glob("throughput-*.json")).read_text())
    del row["batch_size"]
    row["status"] = "fine"
    invalid.write_text(json.dumps(row))
    code, out, err = run_cli(capsys, "render", results, "--out", tmp_path / "out")
    assert code == 0
    assert str(broken) in err and "not valid JSON" in err
    assert str(invalid) in err and "'batch_size'" in err and "'status'" in err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "34 result rows" in md and "2 unreadable or invalid file(s) skipped" in md


def test_render_without_valid_rows_is_a_data_error(tmp_path, capsys):
    (tmp_path / "only.json").write_text("[]")
    code, _, err = run_cli(capsys, "render", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and "no valid result rows" in err
    assert not (tmp_path / "out" / "report.md").exists()


def test_render_shows_oom_rows(tmp_path, capsys):
    machine = fake_machine(gpus=["NVIDIA H100 80GB HBM3"])
    write_row(tmp_path, throughput_row(machine, [5.0e5, 5.5e5, 5.2e5], device="gpu", batch_size=8192))
    write_row(tmp_path, throughput_row(machine, [], device="gpu", batch_size=65536, status="oom"))
    code, _, err = run_cli(capsys, "render", tmp_path, "--out", tmp_path / "out")
    assert code == 0, err
    oom = [l for l in (tmp_path / "out" / "report.md").read_text().splitlines() if "65536" in l]
    assert len(oom) == 1 and "OOM" in [cell.strip() for cell in oom[0].split("|")]


# --------------------------------------------------------------------------------------
# gate: the pure decision
# --------------------------------------------------------------------------------------

def test_gate_decision_floor_applies_when_rounds_do_not_vary():
    assert not gate_decision([100.0] * 3, [96.0] * 3).regression   # -4% is inside the 5% floor
    assert gate_decision([100.0] * 3, [94.0] * 3).regression       # -6% is not
    assert not gate_decision([100.0] * 3, [94.0] * 3, floor=0.07).regression


def test_gate_decision_uses_standard_error_of_the_medians():
    rounds = [90.0, 100.0, 110.0]              # median 100, MAD 10
    s = 1.4826 * 10 / 100                      # robust CV of one round
    se = math.sqrt(math.pi / 2) * s / math.sqrt(3)
    d = gate_decision(rounds, [r * 0.6 for r in rounds], k=3)
    assert d.combined_se == pytest.approx(math.sqrt(2) * se)
    assert d.allowed_drop == pytest.approx(3 * math.sqrt(2) * se)   # 45.5%: 3 noisy rounds
    assert d.change == pytest.approx(-0.4) and not d.regression
    assert gate_decision(rounds, [r * 0.5 for r in rounds], k=3).regression


def test_gate_decision_refuses_too_few_rounds():
    with pytest.raises(ValueError, match=f"at least {MIN_ROUNDS}"):
        gate_decision([100.0, 101.0], [100.0, 99.0, 98.0])


# --------------------------------------------------------------------------------------
# gate: self-tests through the CLI, on synthetic noisy rows
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_gate_passes_two_draws_of_the_same_distribution(tmp_path, capsys, seed):
    machine = fake_machine()
    base = write_matrix(tmp_path / "base", machine, seed)
    cur = write_matrix(tmp_path / "cur", machine, seed + 1000)
    code, out, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 0, out + err
    assert out.count("| ok") == len(GATE_CONFIGS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gate_fails_a_20_percent_slowdown(tmp_path, capsys, seed):
    machine = fake_machine()
    base = write_matrix(tmp_path / "base", machine, seed)
    cur = write_matrix(tmp_path / "cur", machine, seed + 1000, slowdown=0.20)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 1
    assert out.count("REGRESSION") == len(GATE_CONFIGS)


def test_gate_refuses_different_hardware_unless_allowed(tmp_path, capsys):
    epyc = fake_machine()
    h100 = fake_machine(cpu_model="Intel Xeon Platinum 8480+", cores=16, gpus=["NVIDIA H100 80GB HBM3"])
    base = write_matrix(tmp_path / "base", epyc, 1)
    cur = write_matrix(tmp_path / "cur", h100, 2)
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 2
    assert "AMD EPYC 7B13 (2 cores) / no GPU" in err and "NVIDIA H100 80GB HBM3" in err
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur,
                           "--allow-different-hardware")
    assert code == 0, err


def test_gate_rejects_a_malformed_baseline(tmp_path, capsys):
    machine = fake_machine()
    base = write_matrix(tmp_path / "base", machine, 1)
    cur = write_matrix(tmp_path / "cur", machine, 2)
    broken = base / "truncated.json"
    broken.write_text('{"schema": "twinbench.result/1", "images_per_s": [1000.0, 99')
    code, out, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 2 and str(broken) in err and out == ""


def test_gate_refuses_a_baseline_with_too_few_rounds(tmp_path, capsys):
    machine = fake_machine()
    base = write_matrix(tmp_path / "base", machine, 1, n=2)
    cur = write_matrix(tmp_path / "cur", machine, 2)
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 2 and "fewer than 3 rounds" in err and "baseline 2" in err


def test_gate_lists_one_sided_configurations_and_fails_new_ooms(tmp_path, capsys):
    machine = fake_machine()
    rng = random.Random(7)
    base, cur = tmp_path / "base", tmp_path / "cur"
    write_row(base, throughput_row(machine, noisy_rounds(rng, 800.0), batch_size=32))
    write_row(base, throughput_row(machine, noisy_rounds(rng, 900.0), batch_size=64))
    write_row(cur, throughput_row(machine, noisy_rounds(rng, 800.0), batch_size=32))
    write_row(cur, throughput_row(machine, noisy_rounds(rng, 950.0), batch_size=128))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 0 and "only in baseline" in out and "only in current" in out
    write_row(cur, throughput_row(machine, [], batch_size=64, status="oom"))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == 1 and "REGRESSION (now OOM)" in out


# --------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------

def test_compare_speedup_and_framework_ratio_match_hand_computed_values(tmp_path, capsys):
    a100 = fake_machine(cpu_model="AMD EPYC 7763", cores=32, gpus=["NVIDIA A100-SXM4-40GB"])
    h100 = fake_machine(cpu_model="Intel Xeon Platinum 8480+", cores=16, gpus=["NVIDIA H100 80GB HBM3"])
    # medians: A100 torch 10,000, tf 12,000; H100 torch 25,000, tf 27,500
    for machine, directory, torch_rounds, tf_rounds in (
            (a100, tmp_path / "a100", [9000, 10000, 11000], [11000, 12000, 13000]),
            (h100, tmp_path / "h100", [24000, 25000, 26000], [27000, 27500, 28000])):
        write_row(directory, throughput_row(machine, torch_rounds, device="gpu"))
        write_row(directory, throughput_row(machine, tf_rounds, device="gpu", framework="tf"))
    code, out, err = run_cli(capsys, "compare", tmp_path / "a100", tmp_path / "h100",
                             "--base", "0", "--out", tmp_path / "compare.md")
    assert code == 0, err
    assert "[0] NVIDIA A100-SXM4-40GB (base)" in out and "[1] NVIDIA H100 80GB HBM3" in out
    torch_line = next(l for l in out.splitlines() if l.startswith("| torch"))
    tf_line = next(l for l in out.splitlines() if l.startswith("| tf"))
    assert [c.strip() for c in torch_line.split("|")[-4:-1]] == ["10,000", "25,000", "2.50x"]
    assert [c.strip() for c in tf_line.split("|")[-4:-1]] == ["12,000", "27,500", "2.29x"]
    ratio_line = next(l for l in out.splitlines() if l.startswith("| keras_cnn"))
    assert [c.strip() for c in ratio_line.split("|")[-3:-1]] == ["1.20", "1.10"]
    assert (tmp_path / "compare.md").read_text().strip() == out.strip()

    # The same through the functions, with the H100 as base (chosen by part of its label).
    machines = [machine_results(str(d), read_rows([d])) for d in (tmp_path / "a100", tmp_path / "h100")]
    base = resolve_base(machines, "h100")
    assert base == 1
    speedups = {row[0]: row[-1] for row in speedup_table(machines, base).rows}
    assert speedups == {"torch": "0.40x", "tf": "0.44x"}
    assert framework_ratio_table(machines).rows[0][-2:] == ["1.20", "1.10"]


def test_compare_rejects_unknown_base_and_mixed_machines(tmp_path, capsys):
    for name, machine in (("a", fake_machine()), ("b", fake_machine(cores=4))):
        write_row(tmp_path / name, throughput_row(machine, [1.0, 2.0, 3.0]))
    code, _, err = run_cli(capsys, "compare", tmp_path / "a", tmp_path / "b", "--base", "TPU")
    assert code == 2 and "matches no machine" in err
    code, _, err = run_cli(capsys, "compare", tmp_path, tmp_path / "a")
    assert code == 2 and "rows from 2 machines" in err


# --------------------------------------------------------------------------------------
# results: schema, atomic writes, reading
# --------------------------------------------------------------------------------------

def test_validate_row_lists_every_missing_and_mistyped_field():
    row = throughput_row(fake_machine(), [1.0, 2.0, 3.0])
    validate_row(row)
    del row["threads"]
    row["batch_size"] = True             # a bool is not a batch size
    row["images_per_s"] = [1.0, float("nan")]
    row["created"] = "2026-11-26T10:00:00+01:00"  # not UTC
    with pytest.raises(ResultError) as err:
        validate_row(row)
    for field in ("'threads'", "'batch_size'", "'images_per_s'", "'created'"):
        assert field in str(err.value)


def test_write_row_refuses_invalid_rows_and_reads_back(tmp_path):
    row = throughput_row(fake_machine(), [1.0, 2.0, 3.0])
    path = write_row(tmp_path, row)
    assert path.name.startswith("throughput-torch-keras_cnn-cpu-eager-train-b32-")
    assert read_rows([tmp_path]) == [row]
    with pytest.raises(ResultError, match="'kind'"):
        write_row(tmp_path, {**row, "kind": "latency"})
    assert list(tmp_path.iterdir()) == [path]     # nothing else written, no temporary left


def test_read_rows_raises_or_skips_with_the_path(tmp_path):
    write_row(tmp_path / "a" / "b", throughput_row(fake_machine(), [1.0, 2.0, 3.0]))
    bad = tmp_path / "a" / "bad.json"
    bad.write_text("NaN")
    with pytest.raises(ResultError, match=str(bad)):
        read_rows([tmp_path])
    messages = []
    rows = read_rows([tmp_path, tmp_path / "missing"], on_error="skip", warn=messages.append)
    assert len(rows) == 1
    assert len(messages) == 2 and str(bad) in messages[0] and "missing" in messages[1]


def _write_rows(directory, writer, count, barrier):
    """multiprocessing target: one writer of `count` rows, started together with the others."""
    machine = fake_machine()
    barrier.wait()
    for i in range(count):
        row = throughput_row(machine, [1000.0 + i, 1001.0, 1002.0], run_id=f"writer-{writer}")
        row["seq"] = i
        write_row(directory, row)


def test_concurrent_writers_lose_no_rows(tmp_path):
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold framework threads
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=_write_rows, args=(tmp_path, w, 50, barrier)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    files = list(tmp_path.iterdir())
    assert len(files) == 200 and all(f.suffix == ".json" for f in files)
    rows = read_rows([tmp_path], on_error="raise")
    assert sorted((r["run_id"], r["seq"]) for r in rows) == sorted(
        (f"writer-{w}", i) for w in range(4) for i in range(50))


_KILLED_WRITER = """
import json, sys
from twinbench.results import write_row
row = json.loads(sys.argv[2])
row["padding"] = "x" * 6_000_000   # large rows widen the write; the limit per row is 8 MiB
for i in range(10_000):
    row["seq"] = i
    write_row(sys.argv[1], row)
"""


@pytest.mark.parametrize("trial", [1, 2])
def test_writer_killed_mid_loop_leaves_only_complete_rows(tmp_path, trial):
    """SIGKILL a writer of large rows the moment its 3rd `.json` name appears.

    Polling without sleeping makes the kill land right after the name appears: a writer that
    created the final name before its data was complete leaves a partial file (a non-atomic
    writer was caught in 10 of 10 tries); the atomic writer shows the name only once the data
    is on disk, and leaves at most a hidden `.tmp`.
    """
    results = tmp_path / "results"
    row = json.dumps(throughput_row(fake_machine(), [1000.0, 1001.0, 1002.0]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(results), row], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if results.is_dir() and sum(e.name.endswith(".json") for e in os.scandir(results)) >= 3:
                break
            assert proc.poll() is None, "the writer exited before it was killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    complete = list(results.glob("*.json"))
    assert len(complete) >= 3
    rows = read_rows([results], on_error="raise")   # every .json parses and validates
    assert len(rows) == len(complete)
    leftovers = [p for p in results.iterdir() if p.suffix != ".json"]
    assert all(p.name.startswith(".") and p.suffix == ".tmp" for p in leftovers)


def test_check_writable_creates_the_directory(tmp_path):
    check_writable(tmp_path / "new" / "results")
    assert list((tmp_path / "new" / "results").iterdir()) == []  # the probe is gone


def test_check_writable_refuses_a_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(ResultError, match="cannot be created") as err:
        check_writable(blocker / "run")
    assert str(blocker / "run") in str(err.value)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes through permission bits; the regular-file test covers root")
def test_check_writable_refuses_a_read_only_directory(tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        with pytest.raises(ResultError, match="not writable"):
            check_writable(read_only)
    finally:
        read_only.chmod(0o700)


def test_check_writable_refuses_too_little_free_space(tmp_path):
    with pytest.raises(ResultError, match="MiB free"):
        check_writable(tmp_path, min_free_bytes=2**62)


def test_run_ids_are_unique():
    assert len({new_run_id() for _ in range(100)}) == 100


# --------------------------------------------------------------------------------------
# fingerprint
# --------------------------------------------------------------------------------------

def test_fingerprint_fields_and_stable_anonymous_id():
    fp = machine_fingerprint()
    for field in ("cpu_model", "cores", "cpu_count", "memory_gb", "os", "python", "gpu", "cuda",
                  "cudnn", "git_commit", "git_dirty", "id"):
        assert field in fp, field
    assert isinstance(fp["cores"], int) and fp["cores"] >= 1 and isinstance(fp["gpu"], list)
    assert machine_fingerprint()["id"] == fp["id"]
    host = socket.gethostname()
    if len(host) > 3:  # a very short hostname could appear by chance (e.g. in the OS string)
        assert host not in json.dumps(fp)


def test_fingerprint_id_depends_on_hardware_only():
    fp = machine_fingerprint()
    software = {**fp, "git_commit": "0" * 40, "git_dirty": True, "os": "Linux 9.9", "python": "3.12.0"}
    assert hardware_id(software) == fp["id"]
    assert hardware_id({**fp, "cores": fp["cores"] + 1}) != fp["id"]
    assert hardware_id({**fp, "gpu": [{"name": "NVIDIA H100 80GB HBM3"}]}) != fp["id"]


def test_hardware_label():
    assert hardware_label(fake_machine()) == "AMD EPYC 7B13 (2 cores) / no GPU"
    assert hardware_label(fake_machine(gpus=["NVIDIA H100 80GB HBM3"])) == "NVIDIA H100 80GB HBM3"
    assert hardware_label(fake_machine(gpus=["NVIDIA H100 80GB HBM3"] * 2)) == "2x NVIDIA H100 80GB HBM3"


def test_entry_point_and_no_framework_imports():
    """`python -m reports` works as a program, and nothing here imports torch or TensorFlow
    (importing TensorFlow first would crash a later torch import: FACTS.md)."""
    usage = subprocess.run([sys.executable, "-m", "reports"], cwd=ROOT, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    probe = ("import sys, reports.__main__, reports.render, reports.compare, reports.gate, "
             "twinbench.fingerprint as f; f.machine_fingerprint(); "
             "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"
