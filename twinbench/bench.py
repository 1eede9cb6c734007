"""The throughput tier's engine: what is measured (cases), the step of each case (built by
the registered mode, twinbench/frameworks/modes.py), one timing protocol for both frameworks,
and the result rows. Nothing here knows a framework: the adapter does.

What one measurement is
-----------------------
A *step* is one training step (forward, cross-entropy, backward, the optimizer update of
the architecture's own recipe, `recipes.for_arch`: Keras Adam for keras_cnn as in
keras_cnn_adam, SGD with momentum for lenet as in lenet_sgd) or one inference forward pass, on a synthetic batch that already lives on the
device: no input pipeline, no host-to-device copy inside the timed region. Every round of
every mode steps on the same resident batch.

Modes (the row's `mode`): registered in twinbench/frameworks/modes.py, which says what each
one runs; the adapter builds the step of each. A mode exists on some devices only
(cuda_graph on a GPU): elsewhere it has no case, rather than a skipped one.

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
A configuration that runs out of memory (the adapter's `is_oom`: torch.OutOfMemoryError,
tf.errors.ResourceExhaustedError, also when wrapped by a compiler) is written as a row with status
"oom", no rounds and a null median, memory is released, and `run_case` returns normally so
that the next configuration runs. Any other exception is written as an "error" row and
re-raised: a benchmark that breaks must fail its test, and the report still shows which
configuration broke.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import models
from twinbench import recipes, slowdown
from twinbench.frameworks.modes import PHASES, Step, get_mode, modes_for

# --------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------
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


# Quick: enough rounds for the gate's spread estimate, short enough that the quick tier's 12
# timed configurations take about half a minute on the 2-core CPU box.
QUICK = Protocol(rounds=7, warmup_rounds=1, round_s=0.2)
# Full: 12 rounds of about 0.25 s (about 4 s a configuration, so that the 24 torch GPU
# configurations fit a few minutes). On the H100 single timed blocks varied by 5-8%
# (docs/methodology.md#throughput-protocol): the median of 12 rounds then carries a standard error of about 2-3%.
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


def arm_modes(arm: str, *, quick: bool) -> tuple[str, ...]:
    """The modes measured for a Keras-backend arm: eager and compiled (Keras's jit_compile
    False / True); under `quick`, the backend's default alone (Keras's own choice: eager on
    torch, compiled on JAX), as each framework's quick mode is its default."""
    from twinbench.frameworks.keras_backend_worker import DEFAULT_MODE, MODES
    from twinbench.frameworks.keras_backends import ARMS
    return (DEFAULT_MODE[ARMS[arm]],) if quick else MODES


def cases(frameworks, devices, arches, *, quick: bool,
          batch_size_override: tuple[int, ...] | None = None, arms=()) -> list[Case]:
    """Every configuration to measure (under `quick`, each framework's quick modes only),
    frameworks interleaved: for each (device, arch, phase, batch) the frameworks' modes run
    next to each other, then each Keras-backend arm's (--arm), so that drifting load on a
    shared machine touches every framework alike rather than whichever ran last."""
    out = []
    for device in devices:
        for arch in arches:
            for phase in PHASES:
                for batch in batch_sizes(device, quick=quick, override=batch_size_override):
                    for framework in frameworks:
                        for mode in modes_for(framework, device, quick=quick):
                            out.append(Case(framework, device, arch, mode, phase, batch))
                    for arm in arms:
                        for mode in arm_modes(arm, quick=quick):
                            out.append(Case(arm, device, arch, mode, phase, batch))
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
StepFactory = Callable[..., Step]   # (adapter, arch, mode, phase, batch_size, seed) -> Step


def make_step(adapter, arch, mode: str, phase: str, batch_size: int, seed: int = 0) -> Step:
    """The step of `mode` and `phase` for `arch` on the adapter's framework and device: a
    model built with `seed`, the optimizer of the architecture's benchmark recipe (training),
    and a synthetic batch in that recipe's normalization, resident on the device."""
    registered = get_mode(adapter.name, mode, adapter.device)
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(PHASES)}")
    recipe = recipes.for_arch(arch.name)
    model = adapter.build(arch, seed=seed)
    images, labels = synthetic_batch(batch_size, recipe, seed)
    data = adapter.prepare_data(model, images, labels)
    optimizer = adapter.make_optimizer(model, recipe) if phase == "train" else None
    step = registered.factory(adapter, model, optimizer, data, phase)
    step.model = model
    step.info.setdefault("optimizer", type(optimizer).__name__ if optimizer else None)
    return step


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
             ceiling=None, step_factory: StepFactory = make_step, seed: int = 0,
             wrap_step: Callable[[Step], Step] | None = None) -> dict:
    """Measure one configuration and write its row; returns the row.

    `wrap_step`, when given, receives the built step and returns the step to measure (e.g. a
    test that slows run() down by a known fraction to check the regression gate).
    OOM anywhere (building, first call, timed rounds) becomes an "oom" row and a normal
    return; any other exception becomes an "error" row and is re-raised."""
    arch = models.get(case.arch)
    adapter.pin_precision()   # again: something in the session may have flipped a switch
    row = {"kind": "throughput", "framework": case.framework, "arch": case.arch,
           "device": case.device, "mode": case.mode, "phase": case.phase,
           "batch_size": case.batch_size, "status": "ok", "error": None, "compile_s": None,
           "threads": adapter.threads(), "precision": adapter.precision_policy(),
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
        if wrap_step is not None:
            step = wrap_step(step)
        # Test switch TWINBENCH_INJECT_SLOWDOWN (twinbench/slowdown.py): recorded in the row.
        step = slowdown.from_env(step)
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
        oom = adapter.is_oom(exc)
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
        adapter.release_memory()
    write(row)
    if failure is not None:
        raise failure
    return row


# --------------------------------------------------------------------------------------
# The Keras-backend arms: the same protocol, timed inside the arm's worker
# --------------------------------------------------------------------------------------
# An arm's step runs in its worker process (twinbench/frameworks/keras_backends.py); timing it
# from here would add a message round trip to every step. The worker times the rounds itself
# (KerasBackendFramework.time_steps) with the protocol above: compile_s is the first call
# alone; calibration times blocks of 1, 2, 4, ... steps; then `warmup_rounds` untimed and
# `rounds` timed rounds of `iterations` steps, each round ended by a device synchronization
# inside the timed region. pytest-benchmark is not involved (it cannot time another process).
ARM_TIMER = "perf_counter in the Keras-backend worker"


def _arm_step_s(timed, *, min_s: float = 0.05, max_steps: int = 64, repeats: int = 3) -> float:
    """estimate_step_s for an arm: synchronized blocks of 1, 2, 4, ... steps until one lasts
    min_s, then the fastest of `repeats` such blocks, per step."""
    n = 1
    while True:
        per_step = float(timed(1, 0, n).seconds[0])
        if per_step * n >= min_s or n >= max_steps:
            break
        n *= 2
    if n > 1 and repeats > 1:
        per_step = min(per_step, float(min(timed(repeats - 1, 0, n).seconds)))
    return per_step


def run_arm_case(case: Case, arm, *, protocol: Protocol, write: Callable[[dict], Any],
                 ceiling=None, seed: int = 0) -> dict:
    """run_case for a Keras-backend arm (`arm`, a KerasBackendFramework): the architecture's
    recipe optimizer and a synthetic batch as make_step builds them, Keras's train_on_batch
    (phase "train") or predict_on_batch ("infer") in the case's mode, timed in the worker.
    Writes a row of the same schema (plus keras_backend and what Keras compiled); OOM
    becomes an "oom" row, any other exception an "error" row and is re-raised."""
    arch = models.get(case.arch)
    row = {"kind": "throughput", "framework": case.framework, "arch": case.arch,
           "device": case.device, "mode": case.mode, "phase": case.phase,
           "batch_size": case.batch_size, "status": "ok", "error": None, "compile_s": None,
           "threads": arm.threads(), "precision": arm.precision_policy(),
           "keras_backend": arm.backend,
           "keras_versions": {k.removeprefix("version:"): v for k, v in arm.worker.info.items()
                              if k.startswith("version:")},
           **throughput_fields(case, arch, [], None)}
    if hasattr(os, "getloadavg"):
        row["load_average_1min"] = round(os.getloadavg()[0], 2)
    ceiling_flops = getattr(ceiling, "matmul_flops_per_s", None)
    if ceiling is not None:
        row["ceiling"] = ceiling.as_dict()
    model = optimizer = None
    failure = None
    try:
        recipe = recipes.for_arch(arch.name)
        model = arm.build(arch, seed=seed)
        # Inference needs no optimizer, but Keras compiles a model with one before predicting.
        optimizer = arm.make_optimizer(model, recipe)
        images, labels = synthetic_batch(case.batch_size, recipe, seed)

        def timed(rounds: int, warmup: int, iterations: int):
            return arm.time_steps(model, optimizer, images, labels, steps=rounds, warmup=warmup,
                                  mode=case.mode, phase=case.phase, iterations=iterations)
        first = timed(1, 0, 1)
        if first.compiled != (case.mode == "compiled"):
            raise RuntimeError(f"{case.id}: Keras ran jit_compile={first.compiled} for mode "
                               f"{case.mode!r}; the row would name the wrong mode")
        row["compile_s"] = float(first.seconds[0])
        step_s = _arm_step_s(timed)
        iterations = protocol.iterations(step_s)
        times = timed(protocol.rounds, protocol.warmup_rounds, iterations)
        row.update(throughput_fields(case, arch, [case.batch_size / float(s) for s in times.seconds],
                                     ceiling_flops))
        row["protocol"] = {"timer": ARM_TIMER, "rounds": protocol.rounds,
                           "warmup_rounds": protocol.warmup_rounds, "iterations": iterations,
                           "calibrated_step_s": step_s}
        row["optimizer"] = f"keras {recipe.optimizer}"
        row["step"] = "train_on_batch" if case.phase == "train" else "predict_on_batch"
    except Exception as exc:   # noqa: BLE001 (classified and re-raised below)
        row.update(status="oom" if arm.is_oom(exc) else "error", error=_error_text(exc),
                   **throughput_fields(case, arch, [], ceiling_flops))
        if row["status"] == "error":
            failure = exc
    if model is not None and arm.worker.alive():
        arm.release(model, optimizer)
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

