"""Machine identity (twinbench/fingerprint.py): two hosts whose CPU model name reads the same
("AMD EPYC") but whose hardware differs are two machines in the id, the label, the hardware
comparison and the gate; rows written before the CPU details existed are compared on what
they carry. No framework is needed.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from reports.__main__ import main
from twinbench import fingerprint as fpr
from twinbench.results import write_row

ROOT = Path(__file__).resolve().parents[1]
CPU_BOX_SAMPLE = ROOT / "reports" / "samples" / "cpu-box"

ZEN4_ISA = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
            "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
ZEN2_ISA = ["sse4_2", "avx", "avx2", "fma", "f16c"]


def epyc(isa=ZEN4_ISA, family="25", model="17", mhz=2596, cache_l3=32768, details=True):
    """A fingerprint as machine_fingerprint writes it, for a VM that reports a bare 'AMD EPYC'."""
    fp = {"cpu_model": "AMD EPYC", "cores": 2, "cpu_count": 2, "memory_gb": 23.5, "gpu": [],
          "os": "Linux 6.1", "python": "3.11.7"}
    if details:
        fp["cpu"] = {"vendor": "AuthenticAMD", "family": family, "model": model, "stepping": "1",
                     "isa": list(isa), "mhz": mhz,
                     "cache_kb": {"L1d": 32, "L1i": 32, "L2": 1024 if family == "25" else 512,
                                  "L3": cache_l3}}
    fp["id"] = fpr.hardware_id(fp)
    return fp


def ceilings(**gflops_by_impl):
    flops = max(gflops_by_impl.values()) * 1e9
    listed = "; ".join(f"{impl} 1.0 matmul (2 threads): {rate:.1f} GFLOP/s"
                       for impl, rate in gflops_by_impl.items())
    return [{"device": "cpu", "ceiling_flops_per_s": flops,
             "ceiling": {"method": f"fastest fp32 sgemm 2048^3, best of 5 each ({listed}); copy"}}]


def test_this_machine_carries_its_cpu_details():
    fp = fpr.machine_fingerprint()
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo on this platform: the CPU details are Linux-only")
    cpu = fp["cpu"]
    assert cpu["vendor"] and cpu["family"] is not None and isinstance(cpu["isa"], list)
    assert fpr.hardware_difference(fp, fpr.machine_fingerprint()) is None


def test_same_model_name_different_isa_is_other_hardware():
    avx512, avx2 = epyc(), epyc(isa=ZEN2_ISA, family="23", model="49", mhz=2450, cache_l3=16384)
    assert avx512["id"] != avx2["id"]
    why = fpr.hardware_difference(avx512, avx2)
    assert why is not None and "family" in why
    same_numbers = epyc(isa=ZEN2_ISA)
    assert "ISA" in fpr.hardware_difference(avx512, same_numbers)
    assert "avx512f" in fpr.hardware_difference(avx512, same_numbers)
    assert fpr.host_label(avx512) != fpr.host_label(avx2)
    assert fpr.host_label(avx512) == "AMD EPYC (2 cores, AVX-512, 25/17/1, 2.6 GHz) / no GPU"
    assert "AVX2" in fpr.host_label(avx2)


def test_frequency_and_cache_tell_bins_apart_but_the_id_ignores_frequency():
    base = epyc()
    assert "frequency" in fpr.hardware_difference(base, epyc(mhz=3700))
    assert fpr.hardware_id(epyc(mhz=2600)) == base["id"]      # what a VM reports now
    assert "caches" in fpr.hardware_difference(base, epyc(cache_l3=16384))


def test_old_rows_fall_back_on_the_measured_ceiling():
    old = epyc(details=False)
    fast = fpr.with_ceilings(old, ceilings(torch=214.0, numpy=251.7, tensorflow=438.3))
    slow = fpr.with_ceilings(old, ceilings(torch=110.0, numpy=120.0, tensorflow=143.0))
    why = fpr.hardware_difference(fast, slow)
    assert why is not None and "ceiling" in why and "30%" in why
    assert "NOT the CPU details" in fpr.comparison_basis(fast, slow)
    # The same box, a torch-only session: TensorFlow's faster sgemm is missing, the shared
    # ones agree, so it is the same hardware.
    torch_only = fpr.with_ceilings(old, ceilings(torch=205.0, numpy=240.0))
    assert fpr.hardware_difference(fast, torch_only) is None
    # Old rows against new rows of the same box: compared on what both carry.
    assert fpr.hardware_difference(fast, fpr.with_ceilings(epyc(), ceilings(torch=220.0))) is None


def test_gpu_hosts_label_their_cpu_too():
    fp = {**epyc(), "gpu": [{"name": "NVIDIA H100 80GB HBM3"}]}
    assert fpr.host_label(fp).startswith("NVIDIA H100 80GB HBM3 on AMD EPYC (2 cores, AVX-512")
    assert "GPUs" in fpr.hardware_difference(fp, epyc())


def _sample_throughput_rows():
    rows = [json.loads(p.read_text()) for p in sorted(CPU_BOX_SAMPLE.glob("*.json"))]
    return [r for r in rows if r["kind"] == "throughput"]


def test_gate_refuses_a_same_name_host_with_a_third_of_the_ceiling(tmp_path, capsys):
    """Issue 11's case: the committed CPU-box rows (AVX-512, ceiling 438 GFLOP/s, no CPU
    details) against a run on another 'AMD EPYC' host (AVX2, 143 GFLOP/s): exit 2, not 8
    regressions."""
    rows = _sample_throughput_rows()
    assert rows, f"no throughput rows under {CPU_BOX_SAMPLE}"
    other = tmp_path / "other-host"
    for row in rows:
        moved = copy.deepcopy(row)
        moved["run_id"] = "other-host-run"
        moved["machine"] = {**row["machine"], "cpu": epyc(isa=ZEN2_ISA, family="23")["cpu"]}
        moved["machine"]["id"] = fpr.hardware_id(moved["machine"])
        moved["ceiling_flops_per_s"] = 143e9
        moved["ceiling"] = {**row["ceiling"], "method": row["ceiling"]["method"]
                            .replace("214.0", "110.0").replace("251.7", "120.0")
                            .replace("438.3", "143.0")}
        moved["images_per_s"] = [v / 3 for v in row["images_per_s"]]
        moved["median_images_per_s"] = row["median_images_per_s"] / 3
        write_row(other, moved)
    code = main(["gate", "--baseline", str(CPU_BOX_SAMPLE), "--current", str(other)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "refusing to compare different hardware" in err and "ceiling" in err
    assert "AVX2" in err
