"""The ways a framework can run one benchmark step ("modes"), registered one unit each.

A mode is a name, the framework and devices it exists on, and a factory that turns a built
model, its optimizer (None for inference) and a prepared batch into a `Step`. The factory asks
the adapter for everything framework-specific, so this module imports no framework and the
throughput engine (twinbench/bench.py) never branches on one: a new mode is one
`register_mode` call, a new framework registers its own.

The registered modes:
- torch "eager": the module called op by op, as a plain training loop does.
- torch "compiled": the module wrapped in `torch.compile(fullgraph=True, dynamic=False)`;
  AOTAutograd compiles forward and backward, the optimizer update stays eager (compiling the
  update is a separate compilation this tier does not measure).
- torch "cuda_graph" (GPU only): the whole training step (forward, backward, optimizer update)
  captured once into a CUDA graph on static buffers, by the same capture that the recipes'
  training loop uses (TorchFramework.capture: warm-up on a side stream, undone, then the
  capture), then replayed. The adapter's Keras Adam keeps its step count on the device, so
  every replay applies the right bias-corrected step size instead of the one frozen at capture.
- TensorFlow "graph": the step as a `tf.function` WITHOUT XLA, i.e. TensorFlow's default graph
  execution, which is what Keras's own `fit` runs. Pure op-by-op eager TensorFlow
  (`run_eagerly=True`) is not measured: it is a debugging mode, several times slower, that no
  training program uses for speed. Rows written before this mode had its name say "eager"
  (twinbench/results.py maps them on read).
- TensorFlow "xla": the same `tf.function` with `jit_compile=True`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# What one step does: a training step (forward, loss, backward, optimizer update) or an
# inference forward pass.
PHASES = ("train", "infer")


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


# (adapter, model, optimizer or None, PreparedData, phase) -> Step
ModeFactory = Callable[[Any, Any, Any, Any, str], Step]


@dataclass(frozen=True)
class Mode:
    framework: str
    name: str
    devices: tuple[str, ...]   # where the mode exists; elsewhere it has no case (not a skip)
    factory: ModeFactory
    quick: bool = False        # measured under --quick (each framework's default way to run)


MODES: dict[tuple[str, str], Mode] = {}


def register_mode(framework: str, name: str, devices: tuple[str, ...], factory: ModeFactory,
                  *, quick: bool = False) -> Mode:
    """Add a mode; a second registration of the same (framework, name) is refused."""
    key = (framework, name)
    if key in MODES:
        raise ValueError(f"mode {name!r} of {framework} is registered already")
    MODES[key] = Mode(framework, name, tuple(devices), factory, quick)
    return MODES[key]


def modes_for(framework: str, device: str, *, quick: bool = False) -> tuple[str, ...]:
    """The mode names of `framework` on `device`, in registration order."""
    return tuple(m.name for m in MODES.values()
                 if m.framework == framework and device in m.devices and (m.quick or not quick))


def default_mode(framework: str, device: str) -> str:
    """The framework's default way to run a step (its first quick mode): torch "eager", TF
    "graph". Tables set the two defaults side by side, whatever each one is called."""
    return modes_for(framework, device, quick=True)[0]


def mode_names() -> tuple[str, ...]:
    """Every registered mode name (any framework), for validating result rows."""
    return tuple(dict.fromkeys(m.name for m in MODES.values()))


def get_mode(framework: str, name: str, device: str) -> Mode:
    """The mode, or a ValueError that lists what exists for this framework and device."""
    mode = MODES.get((framework, name))
    if mode is None or device not in mode.devices:
        raise ValueError(f"{framework} on {device} has no mode {name!r}; expected one of "
                         f"{', '.join(modes_for(framework, device))}")
    return mode


# -- the registered modes: each factory hands the framework-specific work to the adapter ----
register_mode("torch", "eager", ("cpu", "gpu"), quick=True,
              factory=lambda fw, model, opt, data, phase: fw.step(model, opt, data, phase))
register_mode("torch", "compiled", ("cpu", "gpu"),
              factory=lambda fw, model, opt, data, phase: fw.step(model, opt, data, phase,
                                                                  compiled=True))
register_mode("torch", "cuda_graph", ("gpu",),
              factory=lambda fw, model, opt, data, phase: fw.graphed_step(model, opt, data, phase))
register_mode("tf", "graph", ("cpu", "gpu"), quick=True,
              factory=lambda fw, model, opt, data, phase: fw.step(model, opt, data, phase))
register_mode("tf", "xla", ("cpu", "gpu"),
              factory=lambda fw, model, opt, data, phase: fw.step(model, opt, data, phase,
                                                                  jit_compile=True))
