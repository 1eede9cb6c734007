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


def tf_build(tmp_path, nvidia_smi: str | None, **env) -> subprocess.CompletedProcess:
    """`bash run.sh --print-tf-build` with a fake nvidia-smi (a shell body) or none on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "nvidia-smi"
    fake.unlink(missing_ok=True)
    if nvidia_smi is not None:
        fake.write_text("#!/bin/sh\n" + nvidia_smi + "\n")
        fake.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(["bash", str(ROOT / "run.sh"), "--print-tf-build"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": path, **env})


@pytest.mark.skipif(sys.platform != "linux", reason="the CUDA build is chosen on Linux only")
def test_run_sh_installs_tensorflow_for_the_gpu_where_a_driver_answers(tmp_path):
    gpu = tf_build(tmp_path, 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"')
    assert (gpu.returncode, gpu.stdout.strip()) == (0, "cuda"), gpu.stderr
    broken_driver = tf_build(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert broken_driver.stdout.strip() == "cpu"
    assert tf_build(tmp_path, None).stdout.strip() == "cpu"
    forced = tf_build(tmp_path, None, TWINBENCH_TF_BUILD="cuda")
    assert forced.stdout.strip() == "cuda"
    wrong = tf_build(tmp_path, None, TWINBENCH_TF_BUILD="rocm")
    assert wrong.returncode == 2 and "must be cuda or cpu" in wrong.stderr


@pytest.mark.parametrize("build, says", [("cpu", "CPU-only TensorFlow install"),
                                         ("cuda", "check the NVIDIA driver")])
def test_header_tells_a_cpu_install_from_a_gpu_tensorflow_cannot_see(monkeypatch, build, says):
    """run.sh exports the TensorFlow build it installed; where TensorFlow sees no GPU the
    header says which case this is (plain TensorFlow never sees a GPU on Linux)."""
    if not imports.installed("tf"):
        pytest.skip("TensorFlow is not installed in this environment")
    from twinbench.frameworks.tf_backend import TensorFlowFramework
    if "no GPU" not in TensorFlowFramework.describe():
        pytest.skip("TensorFlow sees a GPU here: the no-GPU wording does not apply")
    monkeypatch.setenv("TWINBENCH_TF_BUILD", build)
    assert says in TensorFlowFramework.describe()
