"""What a device can do at best: fp32 matmul FLOP/s and memory copy bandwidth.

A throughput figure alone says little: 1,100 img/s of the Keras CNN is the CPU box's limit
(about 30 GFLOP/s of useful work, docs/methodology.md#throughput-protocol) but 0.2% of an H100. Each row therefore carries
`ceiling_flops_per_s`, measured once per session and device, and the fraction of it reached.

- matmul: C = A @ B with n x n fp32 operands (2 n^3 FLOP), the best of several timed calls
  (a ceiling is what the device reaches, not what it usually reaches). CPU: n = 2048, with
  the session's pinned thread count, through every sgemm at hand (torch's, NumPy's, and
  TensorFlow's when this process has already loaded it), the fastest counting (see _cpu);
  GPU: torch's fp32 matmul at n = 8192 with TF32 off (TensorFlow's when torch has no CUDA),
  timed with CUDA events.
- copy: dst.copy_(src) of a large fp32 buffer; bandwidth counts the bytes read plus the bytes
  written (2 x the buffer), as device-copy figures usually do (docs/methodology.md#gpu: H100 3.0 TB/s).

torch and TensorFlow are reached through twinbench.imports only (torch before TensorFlow).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from twinbench import imports

CPU_MATMUL_N = 2048          # 17 GFLOP: 0.07-0.17 s on the CPU box (100-250 GFLOP/s, see _cpu)
GPU_MATMUL_N = 8192          # 1.1 TFLOP: about 21 ms at the H100's 51.5 TFLOP/s (fp32)
CPU_COPY_BYTES = 256 * 2**20  # far beyond the last-level cache
GPU_COPY_BYTES = 2 * 2**30
# Timed calls after one warm-up; the best counts (neighbours on a shared machine only slow it).
CPU_REPEATS = 5
GPU_REPEATS = 10


@dataclass(frozen=True)
class Ceiling:
    device: str
    matmul_flops_per_s: float
    copy_bytes_per_s: float
    method: str               # how it was measured, for the record

    def as_dict(self) -> dict:
        return asdict(self)


def _best_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# -- CPU ---------------------------------------------------------------------------------
# On the CPU box (AMD EPYC, Zen 5) MKL's sgemm, which torch.mm uses, runs at about
# 110 GFLOP/s per core while TensorFlow's oneDNN matmul reaches about 250: MKL takes its
# AVX2 path on AMD processors. A ceiling is what the device can reach, so every sgemm at hand
# is measured and the fastest counts; all of them are recorded in `method`.
def _cpu_matmuls() -> dict[str, float]:
    """Seconds of the best n^3 fp32 matmul per implementation available in this process."""
    n = CPU_MATMUL_N
    out = {}
    if imports.installed("torch") and imports.torch_blocked_reason() is None:
        torch = imports.torch()
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        c = torch.empty(n, n)
        out[f"torch {torch.__version__} mm ({torch.get_num_threads()} threads)"] = \
            _best_seconds(lambda: torch.mm(a, b, out=c), CPU_REPEATS)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    out[f"numpy {np.__version__} matmul (BLAS threads not pinned)"] = \
        _best_seconds(lambda: np.matmul(a, b, out=c), CPU_REPEATS)
    if "tensorflow" in sys.modules:   # only when already loaded: never import it for this
        tf = imports.tensorflow()
        with tf.device("/CPU:0"):
            ta, tb = tf.constant(a), tf.constant(b)
            matmul = tf.function(tf.linalg.matmul)
            matmul(ta, tb)
            threads = tf.config.threading.get_intra_op_parallelism_threads() or "default"
            out[f"tensorflow {tf.__version__} matmul ({threads} intra-op threads)"] = \
                _best_seconds(lambda: matmul(ta, tb).numpy(), CPU_REPEATS)
    return out


def _cpu_copy_seconds() -> tuple[str, float]:
    if imports.installed("torch") and imports.torch_blocked_reason() is None:
        torch = imports.torch()
        src = torch.ones(CPU_COPY_BYTES // 4)
        dst = torch.empty_like(src)
        return "torch copy_", _best_seconds(lambda: dst.copy_(src), CPU_REPEATS)
    src = np.ones(CPU_COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return "numpy copyto", _best_seconds(lambda: np.copyto(dst, src), CPU_REPEATS)


def _cpu() -> Ceiling:
    flop = 2 * CPU_MATMUL_N ** 3
    rates = {name: flop / seconds for name, seconds in _cpu_matmuls().items()}
    copy_name, copy_s = _cpu_copy_seconds()
    listed = "; ".join(f"{name}: {rate / 1e9:.1f} GFLOP/s" for name, rate in rates.items())
    return Ceiling("cpu", max(rates.values()), 2 * CPU_COPY_BYTES / copy_s,
                   f"fastest fp32 sgemm {CPU_MATMUL_N}^3, best of {CPU_REPEATS} each ({listed}); "
                   f"{copy_name} {CPU_COPY_BYTES >> 20} MiB")


# -- GPU ---------------------------------------------------------------------------------
def _gpu_torch() -> Ceiling:
    torch = imports.torch()
    n = GPU_MATMUL_N
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False   # the fp32 ceiling, as the rows are fp32
    torch.set_float32_matmul_precision("highest")
    try:
        gen = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn(n, n, device="cuda", generator=gen)
        b = torch.randn(n, n, device="cuda", generator=gen)
        out = torch.empty(n, n, device="cuda")
        matmul_s = _cuda_best_seconds(torch, lambda: torch.mm(a, b, out=out))
        del a, b, out
        src = torch.ones(GPU_COPY_BYTES // 4, device="cuda")
        dst = torch.empty_like(src)
        copy_s = _cuda_best_seconds(torch, lambda: dst.copy_(src))
        del src, dst
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])
        torch.cuda.empty_cache()
    return Ceiling("gpu", 2 * n ** 3 / matmul_s, 2 * GPU_COPY_BYTES / copy_s,
                   f"torch {torch.__version__} fp32 matmul {n}^3 (TF32 off) on "
                   f"{torch.cuda.get_device_name(0)}, CUDA events, best of {GPU_REPEATS}; "
                   f"copy_ {GPU_COPY_BYTES >> 20} MiB")


def _cuda_best_seconds(torch, fn) -> float:
    """Best of GPU_REPEATS calls, each between two CUDA events (device time, not launch)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(GPU_REPEATS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def _gpu_tf() -> Ceiling:
    tf = imports.tensorflow()
    n = GPU_MATMUL_N
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        with tf.device("/GPU:0"):
            a = tf.random.stateless_normal((n, n), seed=(0, 1))
            b = tf.random.stateless_normal((n, n), seed=(0, 2))
            src = tf.ones((GPU_COPY_BYTES // 4,))
            matmul = tf.function(lambda: tf.linalg.matmul(a, b))
            copy = tf.function(lambda: src * 2.0)   # one read, one write per element

            def timed(fn):
                def call():
                    fn()
                    tf.test.experimental.sync_devices()
                return _best_seconds(call, GPU_REPEATS, warmup=3)
            matmul_s = timed(matmul)
            copy_s = timed(copy)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)
    return Ceiling("gpu", 2 * n ** 3 / matmul_s, 2 * GPU_COPY_BYTES / copy_s,
                   f"tensorflow {tf.__version__} fp32 matmul {n}^3 (TF32 off), synchronized, "
                   f"best of {GPU_REPEATS}; elementwise copy {GPU_COPY_BYTES >> 20} MiB")


def measure(device: str) -> Ceiling:
    """Measure the ceiling of `device` ("cpu" or "gpu") with the best available framework."""
    torch_ok = imports.installed("torch") and imports.torch_blocked_reason() is None
    if device == "cpu":
        return _cpu()
    if device == "gpu":
        if torch_ok and imports.torch().cuda.is_available():
            return _gpu_torch()
        if imports.installed("tf") and imports.tensorflow().config.list_physical_devices("GPU"):
            return _gpu_tf()
        raise RuntimeError("no GPU visible to torch or TensorFlow: no GPU ceiling to measure")
    raise ValueError(f"unknown device {device!r}; expected 'cpu' or 'gpu'")
