"""What one pytest-xdist worker may use of its host: CPU threads and a GPU.

Plain functions of the environment, so the rules can be tested without a worker or a GPU
(suites/test_xdist_units.py); fixtures/workers.py applies them (docs/methodology.md#scale-out).

- Threads: co-located workers share the host's usable cores, so each gets its share
  (at least one); `--threads N` overrides it.
- GPUs: on a host with several GPUs each worker sees one, chosen from its index, through
  CUDA_VISIBLE_DEVICES. That must happen before a framework initialises CUDA, so conftest.py
  calls `pin_gpu()` before it imports any framework.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

WORKER_ENV = "PYTEST_XDIST_WORKER"              # gw0, gw1, ... (set by xdist before conftest)
WORKER_COUNT_ENV = "PYTEST_XDIST_WORKER_COUNT"  # workers in the whole session, all hosts
CUDA_ENV = "CUDA_VISIBLE_DEVICES"
# The GPUs the NVIDIA driver exposes, one directory each, readable without importing a
# framework or running nvidia-smi (either would cost seconds before every worker starts).
NVIDIA_GPUS_DIR = Path("/proc/driver/nvidia/gpus")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_worker(cores: int, workers_on_host: int) -> int:
    """Each co-located worker's share of the host's cores: floor division, at least one.
    (Over-subscribing a core makes OpenMP threads wait on descheduled siblings: see
    docs/methodology.md#cpu-hosts; the floor leaves any remainder idle instead.)"""
    if cores < 1 or workers_on_host < 1:
        raise ValueError(f"need cores >= 1 and workers >= 1, got {cores} and {workers_on_host}")
    return max(1, cores // workers_on_host)


def worker_index(worker_id: str | None) -> int | None:
    """gw3 -> 3; None outside a worker."""
    if not worker_id:
        return None
    digits = worker_id.removeprefix("gw")
    if not digits.isdigit():
        raise ValueError(f"unexpected xdist worker id {worker_id!r} (expected gw<number>)")
    return int(digits)


def visible_gpus(environ=os.environ, gpus_dir: Path = NVIDIA_GPUS_DIR) -> list[str]:
    """The GPU ids a process may use: those already in CUDA_VISIBLE_DEVICES (the user's
    choice is kept, only divided), else one per GPU the driver lists (0, 1, ...)."""
    chosen = environ.get(CUDA_ENV)
    if chosen is not None:
        return [g.strip() for g in chosen.split(",") if g.strip()]
    try:
        return [str(i) for i in range(sum(1 for _ in gpus_dir.iterdir()))]
    except OSError:
        return []


def gpu_for_worker(worker_id: str | None, gpus: list[str]) -> str | None:
    """The one GPU a worker should see: worker i gets GPU i mod len(gpus). None (change
    nothing) outside a worker or with fewer than two GPUs, where there is nothing to divide.
    More workers than GPUs share them round-robin (docs/methodology.md#scale-out)."""
    index = worker_index(worker_id)
    if index is None or len(gpus) < 2:
        return None
    return gpus[index % len(gpus)]


def pin_gpu(environ=os.environ, gpus_dir: Path = NVIDIA_GPUS_DIR) -> str | None:
    """Set CUDA_VISIBLE_DEVICES to this worker's GPU (see gpu_for_worker); returns it."""
    gpu = gpu_for_worker(environ.get(WORKER_ENV), visible_gpus(environ, gpus_dir))
    if gpu is not None:
        environ[CUDA_ENV] = gpu
    return gpu


# --------------------------------------------------------------------------------------
# Hosts of an xdist session (seen from the controller)
# --------------------------------------------------------------------------------------
LOCAL_HOST = "this host"


def spec_host(spec: str) -> str:
    """The host an execnet gateway spec runs on: `popen` (any chdir or python) is this host,
    `ssh=[options] host` and `socket=host:port` name theirs."""
    host = LOCAL_HOST
    for part in spec.split("//"):
        key, _, value = part.partition("=")
        if key == "ssh":
            host = value.split()[-1] if value.split() else value   # options come first
        elif key == "socket":
            host = value.rsplit(":", 1)[0]
    return host


def gateway_host(spec) -> str:
    """spec_host of an execnet XSpec (whose unset attributes read as None)."""
    if spec.ssh:
        return spec_host("ssh=" + spec.ssh)
    if spec.socket:
        return spec_host("socket=" + spec.socket)
    return LOCAL_HOST


def workers_per_host(specs: list[str]) -> Counter:
    """host -> number of workers, from the session's gateway specs (`--tx`, `-n`)."""
    expanded = []
    for spec in specs:
        count, star, rest = spec.partition("*")
        expanded += [rest] * int(count) if star and count.isdigit() else [spec]
    return Counter(spec_host(s) for s in expanded)
