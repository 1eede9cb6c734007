"""Framework adapters: one class per framework, the same methods in the same order.

NumPy is the boundary: images go in as NHWC arrays (float32 after a recipe's `prepare`),
logits, losses, weights and gradients come out as NumPy in the canonical layout
(models/layout.py). Suites written against this interface never import a framework, and
nothing outside twinbench/frameworks/ (and the twins' builders in models/) does either:
precision, threads, out-of-memory errors and benchmark steps are the adapters' business too.
`Framework` below is the contract; `FRAMEWORK_CLASSES` registers the adapters.
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Protocol

import numpy as np

from twinbench import imports
from twinbench.imports import FRAMEWORKS

DEVICES = ("cpu", "gpu")
IMAGE_SHAPE = (32, 32, 3)
# The adapter class of each framework id (imports.FRAMEWORKS), imported on first use only, so
# that listing frameworks never imports one.
FRAMEWORK_CLASSES = {"torch": "twinbench.frameworks.torch_backend:TorchFramework",
                     "tf": "twinbench.frameworks.tf_backend:TensorFlowFramework"}


@dataclass
class TwinModel:
    """A built network and what the adapter needs to know about it."""
    arch: Any          # models.spec.Architecture
    net: Any           # torch.nn.Module or keras.Model
    dtype: str = "float32"
    # The adapter's per-model cache of compiled functions (traced steps, captured graphs),
    # keyed as the adapter likes. Changing the weights in place keeps it valid; rebuilding the
    # network (faults.py) must clear it.
    compiled: dict = field(default_factory=dict)


@dataclass
class PreparedData:
    """A data set made resident on the adapter's device, once per run (`prepare_data`)."""
    images: Any          # framework tensor, in the adapter's layout and the model's dtype
    labels: Any          # framework tensor of int64 class ids
    labels_np: np.ndarray  # the same labels in NumPy, for scoring on the host

    def __len__(self) -> int:
        return len(self.labels_np)


class Framework(Protocol):
    """What every adapter provides. Arrays in and out are NumPy unless stated otherwise.

    name: str (an id of imports.FRAMEWORKS); device: "cpu" | "gpu".

    Building and moving weights
      build(arch, seed=0, dtype="float32") -> TwinModel: a fresh network whose initial
          weights are a function of (arch, seed, framework) alone. build seeds the framework's
          own generators with `seed` and leaves Python's and NumPy's global RNGs as it found
          them (so a suite's NumPy draws do not depend on how many models it built).
      get_weights(model) -> {canonical name: array}  (copies; models/layout.py's layout)
      set_weights(model, weights) -> None            (checks names and shapes first)
      parameter_count(model) -> int                  (the framework's own count)
    Computing (NumPy NHWC float32 images, int labels 0..9)
      forward(model, images) -> logits (N, 10), inference mode
      loss(model, images, labels, training=True) -> float, no update: cross-entropy from
          logits plus the architecture's L2 kernel terms (Layer.l2, Keras's regularizer);
          training=False: BatchNorm on its moving statistics (same function without BatchNorm)
      loss_and_gradients(model, images, labels, wrt_inputs=False, training=True)
          -> (float, {name: grad}); "__input__" holds dL/dx (NHWC) when wrt_inputs; BatchNorm's
          moving statistics get gradients in inference mode and zeros in training mode
      feature_shapes(model, images) -> {stage name: per-image NHWC shape}
    Training
      make_optimizer(model, recipe) -> the framework's optimizer for the recipe
      set_learning_rate(model, optimizer, lr) -> None: a recipe's per-epoch schedule
      train_step(model, optimizer, images, labels) -> float loss of that step; updates
          BatchNorm's moving statistics as Keras does (momentum 0.99, biased batch variance)
      prepare_data(model, images, labels) -> PreparedData resident on the device
      fit_epoch(model, optimizer, data, batch_size, order) -> mean batch loss; steps through
          `order` (a NumPy permutation) batch by batch, the last batch partial
      evaluate(model, data, batch_size=1000) -> top-1 accuracy in 0..1
      recipe_settings(recipe) -> context manager yielding the backend settings for the row
      synchronize() -> None: waits until the device has finished queued work
    Benchmark steps (twinbench/frameworks/modes.py registers which mode calls which)
      step(model, optimizer, data, phase, **mode options) -> modes.Step
    Session and environment
      configure(threads, determinism) -> list of notes (classmethod; before any model)
      describe() -> str: versions and devices for the report header (classmethod)
      pin_precision() -> None: full fp32 (TF32 off, no autocast); precision_policy() -> dict
      threads() -> int: CPU threads in use
      is_oom(exc) -> bool: exc, or anything it was raised from, is an out-of-memory error
      oom_errors() -> tuple of the framework's OOM exception classes
      release_memory() -> None: hand freed memory back to the device after a failure
    """
    name: str
    device: str

    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel: ...
    def get_weights(self, model: TwinModel) -> dict[str, np.ndarray]: ...
    def set_weights(self, model: TwinModel, weights: dict[str, np.ndarray]) -> None: ...
    def forward(self, model: TwinModel, images: np.ndarray) -> np.ndarray: ...
    def loss(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
             training: bool = True) -> float: ...
    def loss_and_gradients(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
                           wrt_inputs: bool = False, training: bool = True) -> tuple[float, dict]: ...
    def make_optimizer(self, model: TwinModel, recipe) -> Any: ...
    def set_learning_rate(self, model: TwinModel, optimizer, lr: float) -> None: ...
    def train_step(self, model: TwinModel, optimizer, images, labels) -> float: ...
    def prepare_data(self, model: TwinModel, images, labels) -> PreparedData: ...
    def fit_epoch(self, model: TwinModel, optimizer, data: PreparedData, batch_size: int,
                  order: np.ndarray) -> float: ...
    def evaluate(self, model: TwinModel, data: PreparedData, batch_size: int = 1000) -> float: ...
    def recipe_settings(self, recipe) -> ContextManager[dict]: ...
    def synchronize(self) -> None: ...
    def step(self, model: TwinModel, optimizer, data: PreparedData, phase: str, **options): ...
    def pin_precision(self) -> None: ...
    def precision_policy(self) -> dict: ...
    def threads(self) -> int: ...
    def is_oom(self, exc: BaseException) -> bool: ...
    def oom_errors(self) -> tuple[type, ...]: ...
    def release_memory(self) -> None: ...


def raised_from(exc: BaseException | None, classes: tuple[type, ...], generic: type,
                messages: tuple[str, ...]) -> bool:
    """Whether `exc` or any exception it was raised from is one of `classes`, or a `generic`
    error whose message contains one of `messages` (an OOM that reaches us wrapped, e.g. by a
    compiler). The adapters' is_oom."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, classes):
            return True
        if isinstance(exc, generic) and any(m in str(exc) for m in messages):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def global_rngs_kept():
    """Restore Python's and NumPy's global RNG states on exit (for `build`)."""
    import random
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def check_images(images) -> None:
    """Refuse inputs that are not a non-empty NHWC batch of 32x32 RGB images, saying why."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a NumPy array (NHWC), got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D NHWC batch (N, 32, 32, 3), got shape {shape}")
    if shape[0] == 0:
        raise ValueError("images is an empty batch (N = 0); give at least one image")
    if shape[1:] != IMAGE_SHAPE:
        hint = ""
        if shape[1] == 3 and shape[2:] == (32, 32):
            hint = ": this looks like NCHW; transpose with images.transpose(0, 2, 3, 1)"
        elif shape[3] == 1:
            hint = ": one channel; the twins take RGB"
        elif shape[1:3] != (32, 32):
            hint = f": {shape[1]}x{shape[2]} images; the twins take 32x32 (CIFAR-10)"
        raise ValueError(f"images must have shape (N, 32, 32, 3), got {shape}{hint}")


def check_labels(labels, n: int) -> None:
    if not isinstance(labels, np.ndarray) or labels.shape != (n,):
        raise ValueError(f"labels must be a NumPy array of shape ({n},), "
                         f"got {getattr(labels, 'shape', type(labels).__name__)}")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must lie in 0..9, got {labels.min()}..{labels.max()}")


def unavailable_reason(framework: str, device: str) -> str | None:
    """Why `framework` cannot run on `device` in this process, or None when it can."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
    if not imports.installed(framework):
        return f"{imports.DISPLAY_NAMES[framework]} is not installed in this environment"
    if framework == "torch":
        blocked = imports.torch_blocked_reason()
        if blocked:
            return blocked
        if device == "gpu" and not imports.torch().cuda.is_available():
            return "no CUDA GPU is visible to torch on this machine"
    if framework == "tf" and device == "gpu":
        if not imports.tensorflow().config.list_physical_devices("GPU"):
            return "no GPU is visible to TensorFlow on this machine"
    return None


def framework_class(name: str):
    """The adapter class of framework `name` (imports the framework)."""
    if name not in FRAMEWORK_CLASSES:
        raise ValueError(f"unknown framework {name!r}; expected one of {', '.join(FRAMEWORK_CLASSES)}")
    module, cls = FRAMEWORK_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get_framework(name: str, device: str = "cpu"):
    """The adapter for `name` on `device`; raises with the reason when it cannot run here."""
    reason = unavailable_reason(name, device)
    if reason:
        raise RuntimeError(reason)
    return framework_class(name)(device)
