"""Machine fingerprint: what a result was measured on.

Benchmark numbers only mean something next to the hardware that produced them, and the
regression gate must refuse to compare rows from different machines. The fingerprint
therefore carries an anonymous `id` computed from the hardware-identifying fields only
(CPU model, usable cores, memory, GPU names, and the CPU's vendor, family/model/stepping,
compute ISA extensions and cache sizes): the same box gets the same id on every commit, and
no hostname (or anything else that names a person or site) is recorded.

The CPU model name alone is not enough: virtual machines often report a bare "AMD EPYC",
and hosted CI runners change CPU type from run to run, so two hosts with AVX-512 and with
AVX2 only, a 3x different matmul ceiling, read the same name (docs/methodology.md#cpu-hosts).
`hardware_difference` compares two fingerprints field by field, and the rows' measured
matmul ceiling as a behavioural check; rows written before the CPU details existed are
compared on what they carry, and `comparison_basis` says so.

torch and TensorFlow are never imported here: importing TensorFlow before torch crashes the
process (docs/methodology.md#import-order). They are queried only when the caller has already imported them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import statistics
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


# Compute ISA extensions worth telling hosts apart by (x86 `flags`, Arm `Features`): they
# decide which kernels BLAS and oneDNN run. Not the whole flag list: flags such as
# `hypervisor` or mitigation bits change with kernels and hypervisors, not with the hardware.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
             "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimdhp", "sve", "sve2", "sme")
_CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def _cpu_details() -> dict | None:
    """Vendor, family/model/stepping, compute ISA extensions, frequency and cache sizes of CPU 0
    (Linux /proc/cpuinfo and sysfs); None where they cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    first: dict[str, str] = {}
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if not line.strip():
            if first:
                break       # the first processor's block is enough: the CPUs of a box match
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = set((first.get("flags") or first.get("Features") or "").split())
    mhz = first.get("cpu MHz")
    return {
        "vendor": first.get("vendor_id") or first.get("CPU implementer"),
        "family": first.get("cpu family") or first.get("CPU architecture"),
        "model": first.get("model") or first.get("CPU part"),
        "stepping": first.get("stepping") or first.get("CPU revision"),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "mhz": round(float(mhz)) if mhz and re.fullmatch(r"[\d.]+", mhz) else None,
        "cache_kb": _cache_kb(),
    }


def _cache_kb() -> dict[str, int]:
    """Cache sizes of CPU 0 in KiB by name (L1d, L1i, L2, L3), from sysfs."""
    sizes = {}
    for index in sorted(_CACHE_DIR.glob("index*")) if _CACHE_DIR.is_dir() else []:
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        match = re.fullmatch(r"(\d+)([KMG]?)", size)
        if match:
            scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 ** 2}[match.group(2)]
            sizes[f"L{level}{suffix}"] = round(int(match.group(1)) * scale)
    return sizes


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
    cpu = fp.get("cpu")
    if cpu:
        # The frequency is left out: it is what a VM reports now, not a constant of the box.
        # Rows without these details (written before they existed) keep their old id.
        identity["cpu"] = {k: cpu.get(k) for k in ("vendor", "family", "model", "stepping",
                                                  "isa", "cache_kb")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def machine_fingerprint() -> dict:
    """Describe this machine for a result row (no hostname; see the module docstring)."""
    gpus, gpu_error = _gpus()
    fp = {
        "cpu_model": _cpu_model(),
        "cpu": _cpu_details(),
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


def _isa_level(isa: list[str]) -> str | None:
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"),
                       ("asimd", "NEON")):
        if flag in isa:
            return name
    return None


def host_label(fp: dict) -> str:
    """hardware_label plus what tells hosts of one model name apart (ISA level,
    family/model/stepping, frequency), when the fingerprint carries it:
    'AMD EPYC (2 cores, AVX-512, 25/17/1, 2.6 GHz) / no GPU'."""
    cpu = fp.get("cpu") or {}
    details = [f"{fp.get('cores', '?')} cores"]
    if cpu:
        details.append(_isa_level(cpu.get("isa") or []) or "no AVX")
        numbers = [cpu.get(k) for k in ("family", "model", "stepping")]
        if any(numbers):
            details.append("/".join(str(n) for n in numbers))
        if cpu.get("mhz"):
            details.append(f"{cpu['mhz'] / 1000:.1f} GHz")
    cpu_text = f"{fp.get('cpu_model', 'unknown CPU')} ({', '.join(details)})"
    gpus = [g.get("name", "GPU") for g in fp.get("gpu") or []]
    if gpus:
        return f"{hardware_label(fp)} on {cpu_text}"
    return f"{cpu_text} / no GPU"


# -- telling two machines apart --------------------------------------------------------------
# A matmul ceiling more than 30% apart is other hardware: best-of-5 ceilings of one box agree
# far better than that, and the hosts of issue 11 (AVX-512 against AVX2) differed 3x
# (docs/methodology.md#cpu-hosts).
CEILING_RATIO_LIMIT = 1.30
# A nominal frequency more than 10% apart is another CPU bin (VMs report it steadily).
MHZ_RATIO_LIMIT = 1.10
_IMPL_RATE = re.compile(r"(?:\(|; )([a-z]+) [^;]*?: ([\d.]+) GFLOP/s")


def with_ceilings(machine: dict, rows: list[dict]) -> dict:
    """The machine fingerprint plus the matmul ceilings its rows measured, per device:
    'ceilings' = {device: {'flops': median ceiling, 'by_impl': {'torch': GFLOP/s, ...}}}.
    Input to hardware_difference."""
    ceilings: dict[str, dict] = {}
    for row in rows:
        flops = row.get("ceiling_flops_per_s")
        if flops is None:
            continue
        entry = ceilings.setdefault(row["device"], {"all": [], "by_impl": {}})
        entry["all"].append(flops)
        method = (row.get("ceiling") or {}).get("method") or ""
        for impl, rate in _IMPL_RATE.findall(method):
            entry["by_impl"][impl] = max(entry["by_impl"].get(impl, 0.0), float(rate))
    return {**machine, "ceilings": {d: {"flops": statistics.median(e["all"]),
                                        "by_impl": e["by_impl"]} for d, e in ceilings.items()}}


def _ceiling_difference(a: dict, b: dict) -> str | None:
    for device in sorted(set(a.get("ceilings") or {}) & set(b.get("ceilings") or {})):
        ca, cb = a["ceilings"][device], b["ceilings"][device]
        # The same sgemms on both sides: a torch-only session misses TensorFlow's faster one.
        common = sorted(set(ca["by_impl"]) & set(cb["by_impl"]))
        if common:
            fa = max(ca["by_impl"][i] for i in common) * 1e9
            fb = max(cb["by_impl"][i] for i in common) * 1e9
            how = f"best of {', '.join(common)}"
        else:
            fa, fb, how = ca["flops"], cb["flops"], "as recorded"
        if max(fa, fb) > CEILING_RATIO_LIMIT * min(fa, fb):
            return (f"{device} matmul ceiling {fa / 1e9:.0f} vs {fb / 1e9:.0f} GFLOP/s ({how}; "
                    f"more than {CEILING_RATIO_LIMIT - 1:.0%} apart)")
    return None


def hardware_difference(a: dict, b: dict) -> str | None:
    """Why two machine fingerprints are different hardware, or None when they are the same.

    Compares GPU names, CPU model name, usable cores, memory (whole GiB), the CPU details
    (vendor, family/model/stepping, ISA extensions, caches, frequency within 10%) where both
    carry them, and the measured matmul ceilings (within 30%, see with_ceilings) where both
    carry them. Old rows without CPU details are compared on the rest (comparison_basis)."""
    gpus = [sorted(g.get("name", "") for g in fp.get("gpu") or []) for fp in (a, b)]
    if gpus[0] != gpus[1]:
        return f"GPUs {gpus[0] or 'none'} vs {gpus[1] or 'none'}"
    for key, what in (("cpu_model", "CPU model"), ("cores", "usable cores")):
        if a.get(key) != b.get(key):
            return f"{what} {a.get(key)!r} vs {b.get(key)!r}"
    mem = [None if fp.get("memory_gb") is None else round(fp["memory_gb"]) for fp in (a, b)]
    if None not in mem and mem[0] != mem[1]:
        return f"memory {mem[0]} vs {mem[1]} GiB"
    ca, cb = a.get("cpu"), b.get("cpu")
    if ca and cb:
        for key in ("vendor", "family", "model", "stepping"):
            if ca.get(key) != cb.get(key):
                return f"CPU {key} {ca.get(key)!r} vs {cb.get(key)!r}"
        if ca.get("isa") != cb.get("isa"):
            only_a = sorted(set(ca.get("isa") or []) - set(cb.get("isa") or []))
            only_b = sorted(set(cb.get("isa") or []) - set(ca.get("isa") or []))
            return (f"CPU ISA extensions differ (only in the first: {', '.join(only_a) or '-'}; "
                    f"only in the second: {', '.join(only_b) or '-'})")
        if ca.get("cache_kb") != cb.get("cache_kb"):
            return f"CPU caches {ca.get('cache_kb')} vs {cb.get('cache_kb')} KiB"
        fa, fb = ca.get("mhz"), cb.get("mhz")
        if fa and fb and max(fa, fb) > MHZ_RATIO_LIMIT * min(fa, fb):
            return f"CPU frequency {fa} vs {fb} MHz"
    return _ceiling_difference(a, b)


def comparison_basis(a: dict, b: dict) -> str:
    """What hardware_difference could compare, for the record next to its verdict."""
    parts = ["GPU names, CPU model, cores, memory"]
    if a.get("cpu") and b.get("cpu"):
        parts.append("CPU family/model/stepping, ISA, caches, frequency")
    else:
        parts.append("NOT the CPU details (rows from before they were recorded)")
    if set(a.get("ceilings") or {}) & set(b.get("ceilings") or {}):
        parts.append("matmul ceiling")
    else:
        parts.append("no common matmul ceiling")
    return "; ".join(parts)
