"""The throughput tier's machinery: what is measured (cases), the steps (one factory per
framework and mode), one timing protocol for both frameworks, and the result rows.

What one measurement is
-----------------------
A *step* is one training step (forward, cross-entropy, backward, the recipe's optimizer
update: Keras Adam for keras_cnn as in keras_cnn_adam, SGD with momentum for lenet as in
lenet_sgd) or one inference forward pass, on a synthetic batch that already lives on the
device: no input pipeline, no host-to-device copy inside the timed region. Every round of
every mode steps on the same resident batch.

Modes (the row's `mode`):
- torch "eager": the module called op by op, as a plain training loop does.
- torch "compiled": the module wrapped in `torch.compile(fullgraph=True, dynamic=False)`;
  AOTAutograd compiles forward and backward, the optimizer update stays eager (compiling the
  update is a separate compilation this tier does not measure).
- torch "cuda_graph" (GPU only): the whole training step (forward, backward, optimizer update)
  captured once into a CUDA graph on static buffers, after warm-up steps on a side stream as
  the torch docs prescribe, then replayed. The adapter's Keras Adam keeps its step count on
  the device, so every replay applies the right bias-corrected step size instead of the one
  frozen at capture.
- TensorFlow "eager": the step as a `tf.function` WITHOUT XLA, i.e. TensorFlow's default graph
  execution, which is what Keras's own `fit` runs. Pure op-by-op eager TensorFlow
  (`run_eagerly=True`) is not measured: it is a debugging mode, several times slower, that no
  training program uses for speed, so it would compare torch's production path with
  TensorFlow's debugging path. The row's mode is still "eager" so that the tables line up the
  two frameworks' default ways of running.
- TensorFlow "xla": the same `tf.function` with `jit_compile=True`.

Timing protocol (identical for both frameworks)
-----------------------------------------------
1. compile_s: the first call (trace, compile, CUDA-graph capture, lazy initialisation),
   synchronized, timed on its own and never mixed into the steady-state figures.
2. calibration: a few synchronized steps estimate the step time, which sets `iterations`
   (steps per round) so that a round lasts about `Protocol.round_s`.
3. pytest-benchmark pedantic: `warmup_rounds` untimed rounds, then `rounds` timed rounds of
   `iterations` steps each. The device is synchronized at the end of every round, inside the
   timed region (the last step of each round synchronizes: `_SyncEvery`), and idle at its start.
   One synchronization per round, not per step, so that a launch-bound GPU step keeps the
   host running ahead of the device as a real training loop does.
4. images_per_s: one value per timed round (batch / seconds per step); the row's median is
   their median. A round is not a measurement: the gate compares medians of many rounds.

Out of memory
-------------
A configuration that runs out of memory (torch.OutOfMemoryError, tf.errors.
ResourceExhaustedError, also when wrapped by a compiler) is written as a row with status
"oom", no rounds and a null median, memory is released, and `run_case` returns normally so
that the next configuration runs. Any other exception is written as an "error" row and
re-raised: a benchmark that breaks must fail its test, and the report still shows which
configuration broke.
"""
from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import models
from twinbench import imports
from twinbench.recipes import RECIPES

# --------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------
PHASES = ("train", "infer")
# The recipe whose optimizer (and input normalization) an architecture's training step uses.
RECIPE_FOR_ARCH = {"keras_cnn": "keras_cnn_adam", "lenet": "lenet_sgd", "resnet8": "resnet8_short"}
# Modes per framework and device. cuda_graph does not exist on a CPU: no case, not a skip.
MODES = {
    "torch": {"cpu": ("eager", "compiled"), "gpu": ("eager", "compiled", "cuda_graph")},
    "tf": {"cpu": ("eager", "xla"), "gpu": ("eager", "xla")},
}
QUICK_MODES = ("eager",)
DEFAULT_BATCH_SIZES = {"cpu": (32, 256, 1024), "gpu": (32, 512, 8192)}
QUICK_BATCH_SIZES = {"cpu": (32,), "gpu": (512,)}
# FLOPs of a training step per image, as a multiple of the forward pass: the backward pass
# computes gradients with respect to both activations and weights, about twice the forward.
TRAIN_FLOP_FACTOR = 3


@dataclass(frozen=True)
class Protocol:
    """How many rounds of how long; the step time decides the iterations per round."""
    rounds: int            # timed rounds (the gate needs >= 3 to estimate the spread)
    warmup_rounds: int     # untimed rounds after compilation and calibration
    round_s: float         # target duration of one round
    max_iterations: int = 100_000

    def iterations(self, step_s: float) -> int:
        """Steps per round so that a round lasts about round_s (at least one step)."""
        if not step_s > 0:
            return 1
        return max(1, min(self.max_iterations, round(self.round_s / step_s)))


# Quick: enough rounds for the gate's spread estimate, short enough that the whole quick tier
# (8 configurations on the 2-core CPU box) takes about a minute of timed work.
QUICK = Protocol(rounds=7, warmup_rounds=1, round_s=0.2)
# Full: 12 rounds of about 0.25 s (about 4 s a configuration, so that the 24 torch GPU
# configurations fit a few minutes). On the H100 single timed blocks varied by 5-8%
# (FACTS.md): the median of 12 rounds then carries a standard error of about 2-3%.
FULL = Protocol(rounds=12, warmup_rounds=2, round_s=0.25)


@dataclass(frozen=True)
class Case:
    """One configuration: framework x device x arch x mode x phase x batch size."""
    framework: str
    device: str
    arch: str
    mode: str
    phase: str
    batch_size: int

    @property
    def id(self) -> str:
        return (f"{self.framework}-{self.device}-{self.arch}-{self.mode}-{self.phase}"
                f"-b{self.batch_size}")


def batch_sizes(device: str, *, quick: bool,
                override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    if override:
        return tuple(dict.fromkeys(override))
    return (QUICK_BATCH_SIZES if quick else DEFAULT_BATCH_SIZES)[device]


def modes(framework: str, device: str, *, quick: bool) -> tuple[str, ...]:
    available = MODES[framework][device]
    return tuple(m for m in available if m in QUICK_MODES) if quick else available


def cases(frameworks, devices, arches, *, quick: bool,
          batch_size_override: tuple[int, ...] | None = None) -> list[Case]:
    """Every configuration to measure, frameworks interleaved: for each (device, arch, phase,
    batch) the frameworks' modes run next to each other, so that drifting load on a shared
    machine touches both frameworks alike rather than whichever ran last."""
    out = []
    for device in devices:
        for arch in arches:
            for phase in PHASES:
                for batch in batch_sizes(device, quick=quick, override=batch_size_override):
                    for framework in frameworks:
                        for mode in modes(framework, device, quick=quick):
                            out.append(Case(framework, device, arch, mode, phase, batch))
    return out


def flop_per_image(arch, phase: str) -> float:
    """FLOPs per image of one step: the forward pass, times 3 for a training step."""
    return arch.forward_flops * (TRAIN_FLOP_FACTOR if phase == "train" else 1)


def synthetic_batch(batch_size: int, recipe, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images through the recipe's normalization, and random labels (NHWC)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(batch_size,), dtype=np.int64)
    return recipe.prepare(images), labels


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------
@dataclass
class Step:
    """One step, ready to call. `run()` launches one step and returns its output (loss or
    logits) without waiting for the device; `sync()` waits for the device. `prepare()` does
    the work that must precede the first run (CUDA-graph capture) and is timed as part of
    compile_s. `close()` releases what the step holds."""
    run: Callable[[], Any]
    sync: Callable[[], None]
    prepare: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None
    info: dict = field(default_factory=dict)   # goes into the row (e.g. the optimizer's name)
    model: Any = None                          # the TwinModel stepped, for tests to inspect


StepFactory = Callable[..., Step]   # (adapter, arch, mode, phase, batch_size, seed) -> Step


def make_step(adapter, arch, mode: str, phase: str, batch_size: int, seed: int = 0) -> Step:
    """The step of `mode` and `phase` for `arch` on the adapter's framework and device."""
    if mode not in MODES[adapter.name][adapter.device]:
        raise ValueError(f"{adapter.name} on {adapter.device} has no mode {mode!r}; "
                         f"expected one of {', '.join(MODES[adapter.name][adapter.device])}")
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    recipe = RECIPES[RECIPE_FOR_ARCH[arch.name]]
    if adapter.name == "torch":
        return _torch_step(adapter, arch, recipe, mode, phase, batch_size, seed)
    return _tf_step(adapter, arch, recipe, mode, phase, batch_size, seed)


# -- torch ------------------------------------------------------------------------------
def _torch_step(adapter, arch, recipe, mode, phase, batch_size, seed) -> Step:
    torch = imports.torch()
    F = torch.nn.functional
    model = adapter.build(arch, seed=seed)
    images, labels = synthetic_batch(batch_size, recipe, seed)
    x, y = adapter.prepare_data(model, images, labels)
    net = model.net
    net.train(phase == "train")
    optimizer = None
    if phase == "train":
        # KerasAdam keeps its step count on the device, so a replayed graph stays right.
        optimizer = adapter.make_optimizer(model, recipe)

    # The accuracy suite may have switched oneDNN off for LeNet at batch 4; the benchmark
    # always measures torch's default CPU backend, whatever ran before it in the session.
    # (Set after everything above that can fail, so that close() always restores it.)
    mkldnn_before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True

    def close():
        torch.backends.mkldnn.enabled = mkldnn_before

    if mode == "cuda_graph":
        step = _torch_cuda_graph_step(torch, adapter, net, optimizer, x, y, close)
        step.model = model
        return step

    if mode == "compiled":
        # A fresh compiler state per configuration: otherwise recompilations for each new
        # model instance and batch size pile up until dynamo's cache limit, past which it
        # silently runs eager and "compiled" would measure eager.
        torch.compiler.reset()
        net_call = torch.compile(net, fullgraph=True, dynamic=False)
    else:
        net_call = net

    if phase == "train":
        def run():
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net_call(x), y)
            loss.backward()
            optimizer.step()
            return loss.detach()
    else:
        def run():
            with torch.inference_mode():
                return net_call(x)
    return Step(run=run, sync=adapter.synchronize, close=close, model=model,
                info={"optimizer": type(optimizer).__name__ if optimizer else None})


def _torch_cuda_graph_step(torch, adapter, net, optimizer, x, y, close) -> Step:
    """Capture one step into a CUDA graph on static buffers (x, y stay where they are; new
    data would be copied into them before each replay), following the torch docs' "whole
    network capture": warm-up iterations on a side stream, grads set to None before capture
    so backward allocates them from the graph's private pool, then replay."""
    F = torch.nn.functional
    graph = torch.cuda.CUDAGraph()
    static: dict = {}
    train = optimizer is not None

    def eager_step():
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                net(x)

    def prepare():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):   # warm-up: cuDNN/cuBLAS workspaces, optimizer state
                eager_step()
        torch.cuda.current_stream().wait_stream(side)
        if train:
            optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                loss = F.cross_entropy(net(x), y)
                loss.backward()
                optimizer.step()
            static["out"] = loss
        else:
            with torch.no_grad(), torch.cuda.graph(graph):
                static["out"] = net(x)

    def run():
        graph.replay()
        return static["out"]

    def close_graph():
        graph.reset()
        close()

    return Step(run=run, sync=adapter.synchronize, prepare=prepare, close=close_graph,
                info={"optimizer": type(optimizer).__name__ if optimizer else None})


# -- TensorFlow -------------------------------------------------------------------------
def _tf_step(adapter, arch, recipe, mode, phase, batch_size, seed) -> Step:
    tf = imports.tensorflow()
    import keras

    model = adapter.build(arch, seed=seed)
    images, labels = synthetic_batch(batch_size, recipe, seed)
    x = adapter.to_tensor(model, images)
    with tf.device(adapter.tf_device):
        y = tf.constant(labels)
    net = model.net
    device = adapter.tf_device
    jit = mode == "xla"
    optimizer = None
    if phase == "train":
        optimizer = adapter.make_optimizer(model, recipe)
        variables = list(net.trainable_variables)
        optimizer.build(variables)   # slots exist before tracing, never created inside it
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function(jit_compile=jit)
        def train_step(x, y):
            with tf.device(device):
                with tf.GradientTape() as tape:
                    loss = loss_fn(y, net(x, training=True))
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
                return loss

        def run():
            return train_step(x, y)
    else:
        @tf.function(jit_compile=jit)
        def infer_step(x):
            with tf.device(device):
                return net(x, training=False)

        def run():
            return infer_step(x)
    return Step(run=run, sync=adapter.synchronize, model=model,
                info={"optimizer": type(optimizer).__name__ if optimizer else None})


# --------------------------------------------------------------------------------------
# Precision, threads, out-of-memory errors
# --------------------------------------------------------------------------------------
def pin_precision(adapter) -> None:
    """Full fp32 everywhere: TF32 off (TensorFlow enables it by default on Ampere and later,
    torch for cuDNN convolutions), no autocast. The adapters pin this on construction; this
    repeats it in case something in the session flipped a global switch since."""
    if adapter.device != "gpu":
        return   # TF32 is a GPU tensor-core mode: a CPU computes plain fp32 either way
    if adapter.name == "torch":
        torch = imports.torch()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
    else:
        imports.tensorflow().config.experimental.enable_tensor_float_32_execution(False)


def precision_policy(adapter) -> dict:
    """The precision switches in force, for the row (the reports never pool different ones)."""
    tf32 = False
    if adapter.device == "gpu":
        if adapter.name == "torch":
            torch = imports.torch()
            tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        else:
            tf32 = imports.tensorflow().config.experimental.tensor_float_32_execution_enabled()
    return {"tf32": bool(tf32), "autocast": None}


def framework_threads(adapter) -> int:
    """The CPU thread count the framework actually uses (pinned equal at session start)."""
    if adapter.name == "torch":
        return int(imports.torch().get_num_threads())
    n = imports.tensorflow().config.threading.get_intra_op_parallelism_threads()
    # 0 means "TensorFlow's default": one thread per usable core.
    return int(n) or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)


def oom_errors(framework: str) -> tuple[type, ...]:
    """The framework's out-of-memory exception classes."""
    if framework == "torch":
        return (imports.torch().OutOfMemoryError,)   # torch.cuda.OutOfMemoryError is this class
    return (imports.tensorflow().errors.ResourceExhaustedError,)


# Messages of OOMs that reach us as the framework's generic error (e.g. an allocation inside a
# compiler or a CUDA call rather than the caching allocator).
# torch raises a plain RuntimeError when a CPU allocation fails (no OutOfMemoryError class).
_OOM_MESSAGES = {"torch": ("CUDA out of memory", "CUDA error: out of memory",
                           "DefaultCPUAllocator: can't allocate memory"),
                 "tf": ("RESOURCE_EXHAUSTED", "OOM when allocating")}


def is_oom(exc: BaseException, framework: str) -> bool:
    """Whether `exc`, or any exception it was raised from, is an out-of-memory error."""
    classes = oom_errors(framework)
    generic = RuntimeError if framework == "torch" else imports.tensorflow().errors.OpError
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, classes):
            return True
        if isinstance(exc, generic) and any(m in str(exc) for m in _OOM_MESSAGES[framework]):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def release_memory(framework: str) -> None:
    """Return freed memory to the device after a failed configuration."""
    gc.collect()
    if framework == "torch":
        torch = imports.torch()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------
class _SyncEvery:
    """The target handed to a timer: one step per call, and a device synchronization on
    every `every`-th call, i.e. on the last step of each round, inside the timed region."""

    def __init__(self, step: Step, every: int):
        self.run, self.sync, self.every, self.calls = step.run, step.sync, every, 0

    def __call__(self):
        self.run()
        self.calls += 1
        if self.calls % self.every == 0:
            self.sync()


def first_call_s(step: Step) -> float:
    """Seconds for prepare() plus the first step, synchronized: trace, compile, capture."""
    start = time.perf_counter()
    step.prepare()
    step.run()
    step.sync()
    return time.perf_counter() - start


def estimate_step_s(step: Step, *, min_s: float = 0.05, max_steps: int = 64,
                    repeats: int = 3) -> float:
    """Seconds per step, to size the rounds: synchronized blocks of 1, 2, 4, ... steps until
    a block lasts min_s, then the fastest of `repeats` such blocks (a neighbour's burst on a
    shared machine only ever adds time, and would otherwise shrink every round to one step).
    A step longer than min_s is timed once."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            step.run()
        step.sync()
        best = time.perf_counter() - start
        if best >= min_s or n >= max_steps:
            break
        n *= 2
    if n > 1:
        for _ in range(repeats - 1):
            start = time.perf_counter()
            for _ in range(n):
                step.run()
            step.sync()
            best = min(best, time.perf_counter() - start)
    return best / n


class BareTimer:
    """The reference: time.perf_counter around `iterations` steps, the last synchronized."""
    name = "perf_counter"

    def __init__(self, between_rounds: Callable[[], None] | None = None):
        self.between_rounds = between_rounds

    def seconds_per_step(self, step: Step, *, rounds: int, iterations: int,
                         warmup_rounds: int) -> list[float]:
        target = _SyncEvery(step, iterations)
        step.sync()
        out = []
        for r in range(warmup_rounds + rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                target()
            elapsed = time.perf_counter() - start
            if r >= warmup_rounds:
                out.append(elapsed / iterations)
            if self.between_rounds is not None:
                self.between_rounds()
        return out


class PedanticTimer:
    """The suite's timer: pytest-benchmark's pedantic mode (warm-up rounds, then timed
    rounds of `iterations` calls; pytest-benchmark records seconds per call per round).

    `between_rounds` runs after every round, outside the timed region (pedantic's teardown):
    the harness-overhead test alternates bare rounds with the harness's rounds through it."""
    name = "pytest-benchmark pedantic"

    def __init__(self, benchmark, between_rounds: Callable[[], None] | None = None):
        self.benchmark = benchmark
        self.between_rounds = between_rounds

    def seconds_per_step(self, step: Step, *, rounds: int, iterations: int,
                         warmup_rounds: int) -> list[float]:
        target = _SyncEvery(step, iterations)
        step.sync()
        self.benchmark.pedantic(target, rounds=rounds, iterations=iterations,
                                warmup_rounds=warmup_rounds,
                                teardown=self.between_rounds)
        step.sync()   # pedantic makes one more untimed call after the rounds when iterations > 1
        # The synchronization must have landed on the last call of every round, which holds
        # only if pedantic calls the target exactly `iterations` times per round.
        expected = (warmup_rounds + rounds) * iterations + (1 if iterations > 1 else 0)
        if target.calls != expected:
            raise RuntimeError(f"pytest-benchmark called the step {target.calls} times, expected "
                               f"{expected}: device synchronization may have fallen outside "
                               f"the timed regions")
        data = list(self.benchmark.stats.stats.data)
        if len(data) != rounds:
            raise RuntimeError(f"pytest-benchmark recorded {len(data)} rounds, expected {rounds}")
        return data


# --------------------------------------------------------------------------------------
# One configuration, start to row
# --------------------------------------------------------------------------------------
def throughput_fields(case: Case, arch, images_per_s: list[float],
                      ceiling_flops_per_s: float | None) -> dict:
    """The numeric fields of a row: median img/s, FLOP/s and the fraction of the ceiling."""
    flop = flop_per_image(arch, case.phase)
    median = statistics.median(images_per_s) if images_per_s else None
    flops = None if median is None else median * flop
    fraction = None if flops is None or not ceiling_flops_per_s else flops / ceiling_flops_per_s
    return {"images_per_s": list(images_per_s), "median_images_per_s": median,
            "flop_per_image": flop, "flops_per_s": flops,
            "ceiling_flops_per_s": ceiling_flops_per_s, "fraction_of_ceiling": fraction}


def _error_text(exc: BaseException, limit: int = 600) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_case(case: Case, adapter, *, timer, protocol: Protocol, write: Callable[[dict], Any],
             ceiling=None, step_factory: StepFactory = make_step, seed: int = 0) -> dict:
    """Measure one configuration and write its row; returns the row.

    OOM anywhere (building, first call, timed rounds) becomes an "oom" row and a normal
    return; any other exception becomes an "error" row and is re-raised."""
    arch = models.get(case.arch)
    pin_precision(adapter)
    row = {"kind": "throughput", "framework": case.framework, "arch": case.arch,
           "device": case.device, "mode": case.mode, "phase": case.phase,
           "batch_size": case.batch_size, "status": "ok", "error": None, "compile_s": None,
           "threads": framework_threads(adapter), "precision": precision_policy(adapter),
           **throughput_fields(case, arch, [], None)}
    if hasattr(os, "getloadavg"):
        # Other work on the machine slows every round, a 2-thread torch step on a busy 2-core
        # machine by 10-100x (OpenMP threads wait for a descheduled sibling): keep the evidence.
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
    ceiling_flops = getattr(ceiling, "matmul_flops_per_s", None)
    if ceiling is not None:
        row["ceiling"] = ceiling.as_dict()
    step = None
    failure = None
    try:
        step = step_factory(adapter, arch, case.mode, case.phase, case.batch_size, seed)
        row["compile_s"] = first_call_s(step)
        step_s = estimate_step_s(step)
        iterations = protocol.iterations(step_s)
        seconds = timer.seconds_per_step(step, rounds=protocol.rounds, iterations=iterations,
                                         warmup_rounds=protocol.warmup_rounds)
        row.update(throughput_fields(case, arch, [case.batch_size / s for s in seconds],
                                     ceiling_flops))
        row["protocol"] = {"timer": timer.name, "rounds": protocol.rounds,
                           "warmup_rounds": protocol.warmup_rounds, "iterations": iterations,
                           "calibrated_step_s": step_s}
        row.update(step.info)
    except Exception as exc:   # noqa: BLE001 (classified and re-raised below)
        oom = is_oom(exc, case.framework)
        row.update(status="oom" if oom else "error", error=_error_text(exc),
                   **throughput_fields(case, arch, [], ceiling_flops))
        if oom:
            # The traceback's frames hold the step's tensors: drop it before releasing memory.
            exc.__traceback__ = None
        else:
            failure = exc
    if step is not None:
        try:
            step.close()
        except Exception as exc:   # noqa: BLE001 (after a failure, cleanup must not mask it)
            if row["status"] == "ok":
                row.update(status="error", error=_error_text(exc),
                           **throughput_fields(case, arch, [], ceiling_flops))
                failure = exc
        step = None
    if row["status"] != "ok":
        release_memory(case.framework)
    write(row)
    if failure is not None:
        raise failure
    return row


def describe(row: dict) -> str:
    """One line for the terminal."""
    name = (f"{row['framework']}/{row['arch']} {row['device']} {row['mode']} {row['phase']} "
            f"b{row['batch_size']}")
    if row["status"] != "ok":
        return f"{name}: {row['status'].upper()} ({row['error']})"
    rounds = row["images_per_s"]
    spread = (max(rounds) - min(rounds)) / row["median_images_per_s"] if len(rounds) > 1 else 0.0
    fraction = row["fraction_of_ceiling"]
    ceiling = "" if fraction is None else f", {100 * fraction:.1f}% of the matmul ceiling"
    load = row.get("load_average_1min")
    busy = (f"; machine busy: load average {load:.1f} on {os.cpu_count()} cores, figures unreliable"
            if load is not None and load > (os.cpu_count() or 1) + 0.5 else "")
    return (f"{name}: {row['median_images_per_s']:,.0f} img/s (median of {len(rounds)} rounds, "
            f"min-max {100 * spread:.0f}% of median), compile/first call {row['compile_s']:.2f} s"
            f"{ceiling}{busy}")

