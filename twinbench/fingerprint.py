"""Machine fingerprint: what a result was measured on.

Benchmark numbers only mean something next to the hardware that produced them, and the
regression gate must refuse to compare rows from different machines. The fingerprint
therefore carries an anonymous `id` computed from the hardware-identifying fields only
(CPU model, usable cores, memory, GPU names): the same box gets the same id on every
commit, and no hostname (or anything else that names a person or site) is recorded.

torch and TensorFlow are never imported here: importing TensorFlow before torch crashes the
process (../shared/FACTS.md). They are queried only when the caller has already imported them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

_REPO_DIR = Path(__file__).resolve().parent
_SUBPROCESS_TIMEOUT_S = 10  # nvidia-smi or git hanging must not hang a benchmark session


def _cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def _usable_cores() -> int:
    """Cores this process may run on (containers and taskset limit it below os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _memory_gb() -> float | None:
    """Physical memory in GiB, one decimal."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def _nvidia_smi() -> tuple[list[dict], str | None]:
    """GPUs as nvidia-smi reports them, and the reason when it could not be asked."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return [], None
    try:
        out = subprocess.run(
            [binary, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi failed: {exc}"
    gpus = []
    for line in out.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        try:
            name, driver, memory_mib = fields
            memory_gb = round(float(memory_mib) / 1024, 1)
        except ValueError:
            return [], f"nvidia-smi printed an unexpected line: {line!r}"
        gpus.append({"name": name, "driver": driver, "memory_gb": memory_gb})
    return gpus, None


def _gpus() -> tuple[list[dict], str | None]:
    """GPUs via torch.cuda when torch is already imported, else via nvidia-smi."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        smi, _ = _nvidia_smi()  # torch has no public driver-version call; nvidia-smi does
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name,
                         "driver": smi[i]["driver"] if i < len(smi) else None,
                         "memory_gb": round(props.total_memory / 2**30, 1)})
        return gpus, None
    return _nvidia_smi()


def _cuda_versions() -> dict:
    """CUDA and cuDNN versions from whichever framework is already imported (torch first)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return {"cuda": torch.version.cuda, "cudnn": None if cudnn is None else str(cudnn)}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        info = tf.sysconfig.get_build_info()
        return {"cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version")}
    return {"cuda": None, "cudnn": None}


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(_REPO_DIR), *args], capture_output=True,
                                text=True, timeout=_SUBPROCESS_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None  # no git binary, or it hung: the commit is then simply "unknown"
    return result.stdout.strip() if result.returncode == 0 else None


def _git_state() -> dict:
    """The commit of the checkout holding this file, and whether tracked files differ from it."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else status != ""}


def hardware_id(fp: dict) -> str:
    """A short stable hash of the hardware-identifying fields only.

    Memory is rounded to whole GiB because MemTotal moves by a few MiB between kernels.
    Software (OS, drivers, commit) is left out on purpose: it is what a regression gate
    compares across, not what it must hold fixed.
    """
    memory = fp.get("memory_gb")
    identity = {
        "cpu_model": fp.get("cpu_model"),
        "cores": fp.get("cores"),
        "memory_gb": None if memory is None else round(memory),
        "gpu": sorted(g.get("name", "") for g in fp.get("gpu", [])),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def machine_fingerprint() -> dict:
    """Describe this machine for a result row (no hostname; see the module docstring)."""
    gpus, gpu_error = _gpus()
    fp = {
        "cpu_model": _cpu_model(),
        "cores": _usable_cores(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "gpu": gpus,
        **_cuda_versions(),
        **_git_state(),
    }
    if gpu_error:
        fp["gpu_error"] = gpu_error
    fp["id"] = hardware_id(fp)
    return fp


def hardware_label(fp: dict) -> str:
    """A short human label: the GPU(s) when there are any, else the CPU and its cores."""
    gpus = [g.get("name", "GPU") for g in fp.get("gpu") or []]
    if gpus:
        names = sorted(set(gpus))
        return " + ".join(f"{gpus.count(n)}x {n}" if gpus.count(n) > 1 else n for n in names)
    return f"{fp.get('cpu_model', 'unknown CPU')} ({fp.get('cores', '?')} cores) / no GPU"
