"""The GPU check scripts take an output directory and options, and on a machine without a GPU
stop before running anything, saying why (they assume nothing about the machine)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("scripts/gpu_checks.sh", "scripts/gpu_bench.sh")


def run(script, *args, path=None):
    env = {"PATH": path or "/usr/bin:/bin", "PYTHON": "false"}   # no python step may run
    return subprocess.run(["bash", str(ROOT / script), *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("args", [(), ("--device", "gpu"), ("{out}", "--budget", "soon"),
                                  ("{out}", "--device", "tpu"), ("{out}", "--no-such-option"),
                                  ("{out}", "--framework")])
def test_bad_arguments_are_a_usage_error(tmp_path, script, args):
    done = run(script, *(a.format(out=tmp_path / "out") for a in args))
    assert done.returncode == 2 and "usage: bash " + script in done.stderr
    assert not (tmp_path / "out" / "results").exists()


def test_gpu_checks_without_a_gpu_stops_with_the_reason(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    smi.chmod(0o755)
    out = tmp_path / "out"
    done = run("scripts/gpu_checks.sh", out, path=f"{fake_bin}:/usr/bin:/bin")
    assert done.returncode == 2
    assert "no NVIDIA GPU here" in done.stderr and "--device cpu" in done.stderr
    assert (out / "gpu_checks.log").is_file() and not (out / "recipes").exists()


def test_gpu_checks_refuses_a_missing_data_folder(tmp_path):
    done = run("scripts/gpu_checks.sh", tmp_path / "out", "--data", tmp_path / "nowhere")
    assert done.returncode == 2 and "does not exist" in done.stderr
