"""The main job, `python -m twinbench compare` (README Quick start), end to end on a small
selection: it must run the measurements in its own pytest process and render the report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinbench import imports

ROOT = Path(__file__).resolve().parent.parent


def test_compare_measures_then_renders_a_report(tmp_path):
    if not imports.installed("torch"):
        pytest.skip("this end-to-end check drives the torch benchmarks; torch is not installed")
    results, out = tmp_path / "results", tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "twinbench", "compare", "--quick", "--no-accuracy",
         "--results", str(results), "--out", str(out), "--",
         "--framework", "torch", "--arch", "lenet", "--device", "cpu", "-k", "not overhead"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(list(results.glob("throughput-torch-lenet-*.json"))) == 2     # train and infer
    report = (out / "report.md").read_text()
    assert "| torch " in report and "| lenet " in report
    assert (out / "report.html").is_file() and list(out.glob("*.png"))


def test_compare_with_nothing_measured_says_so(tmp_path):
    """An empty selection must not end in an empty "report" that looks like a result."""
    done = subprocess.run(
        [sys.executable, "-m", "twinbench", "compare", "--no-accuracy", "--results",
         str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--", "-k", "no_such_test_name"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "nothing to render" in done.stderr
    assert not (tmp_path / "o" / "report.md").exists()
