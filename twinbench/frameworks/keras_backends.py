"""The Keras twins on Keras 3's torch and JAX backends: two more framework arms.

The same `keras_model()` on TensorFlow and on torch differs only in the runtime; the Keras
model on torch and the native torch twin differ only in the API. Keras fixes its backend once
per process, and this process runs Keras on TensorFlow, so each backend runs in a worker
process of its own (twinbench/frameworks/keras_backend_worker.py), one per backend and
device, started on first use and kept for the session. KerasBackendFramework offers the
adapters' methods (twinbench/frameworks/__init__.py) with the same NumPy boundary; every call
is a request to the worker. Importing this module imports no framework.
"""
from __future__ import annotations

import atexit
import contextlib
import importlib.util
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.layout import check_weights
from twinbench import npz_messages
from twinbench.frameworks import TwinModel, check_images, check_labels
from twinbench.frameworks.keras_backend_worker import (BACKENDS, DEFAULT_MODE, DEVICES,
                                                       MODES)

WORKER = Path(__file__).with_name("keras_backend_worker.py")
# Arm name -> Keras backend; the names used by options, fixtures and result rows.
ARMS = {"keras-torch": "torch", "keras-jax": "jax"}
# The packages each backend needs besides Keras (import names).
_PACKAGES = {"torch": ("torch", "torchvision"), "jax": ("jax", "jaxlib")}
_INSTALL = {"torch": "pip install -r requirements/torch.txt",
            "jax": "pip install -r requirements/jax.txt"}
_STDERR_LINES = 30   # of a dead worker's stderr, quoted in the error
# How an out-of-memory error reads in a worker's error message: torch's class and message, and
# XLA's status (JAX).
_OOM_MESSAGES = ("OutOfMemoryError", "CUDA out of memory", "RESOURCE_EXHAUSTED", "Out of memory")


class WorkerDied(RuntimeError):
    """The worker process exited (crashed, was killed, or closed its channel)."""


class WorkerError(RuntimeError):
    """A request failed inside the worker; the message carries the worker's traceback."""


class BackendUnavailable(RuntimeError):
    """The backend cannot run on the device here; the message says why."""


class BackendWorker:
    """One worker process for one backend and device, and the channel to it."""

    def __init__(self, backend: str, device: str = "cpu", threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown Keras backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")
        self.backend, self.device = backend, device
        command = [sys.executable, str(WORKER), "--backend", backend, "--device", device]
        if threads:
            command += ["--threads", str(threads)]
        # stderr goes to a file, so that a worker that dies can be explained by its last lines
        # and a chatty one can never block on a full pipe.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self._stderr)
        hello = self._receive("start")
        if "unavailable" in hello:
            self.close()
            raise BackendUnavailable(npz_messages.text(hello, "unavailable"))
        self.info = {k: npz_messages.text(hello, k) for k in hello if k != "ready"}

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, op: str, **fields) -> dict[str, np.ndarray]:
        """Send one request and return the reply; raise WorkerError or WorkerDied."""
        if not self.alive():
            raise self._died(op)
        try:
            npz_messages.send(self.process.stdin, {"op": op, **fields})
        except (BrokenPipeError, OSError):
            raise self._died(op) from None
        reply = self._receive(op)
        if "error" in reply:
            raise WorkerError(f"keras-{self.backend} worker, request {op!r}: "
                              f"{npz_messages.text(reply, 'error')}\n--- worker traceback ---\n"
                              f"{npz_messages.text(reply, 'traceback')}")
        return reply

    def _receive(self, op: str) -> dict[str, np.ndarray]:
        try:
            return npz_messages.receive(self.process.stdout)
        except npz_messages.ChannelClosed:
            raise self._died(op) from None

    def _died(self, op: str) -> WorkerDied:
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            how = "closed its channel but is still running"
        elif code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code}"
        return WorkerDied(f"the keras-{self.backend} worker on {self.device} (pid {self.pid}) {how}, "
                          f"during request {op!r}; start a new one (a crash there cannot be "
                          f"retried safely). Its last stderr lines:\n{self.stderr_tail()}")

    def stderr_tail(self, lines: int = _STDERR_LINES) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(nothing on stderr)"

    def close(self, timeout: float = 30) -> None:
        """Ask the worker to exit, then make sure it has (killing it after `timeout` s)."""
        if self.alive():
            try:
                npz_messages.send(self.process.stdin, {"op": "shutdown"})
                self.process.stdin.close()
                self.process.wait(timeout=timeout)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._stderr):
            if not stream.closed:
                stream.close()


_WORKERS: dict[tuple[str, str], BackendWorker] = {}
_UNAVAILABLE: dict[tuple[str, str], str] = {}
# CPU threads for workers started from now on (configure); None: the backend's own default.
_SETTINGS = {"threads": None}


def configure(threads: int | None) -> None:
    """The session's thread count, as the other adapters' configure takes it: the torch
    backend's workers pin it (torch.set_num_threads); JAX has no such switch (XLA's CPU pool
    takes the usable cores), and its rows record what it used."""
    _SETTINGS["threads"] = threads


def shared_worker(backend: str, device: str = "cpu") -> BackendWorker:
    """The process's worker for (backend, device): started once, restarted if it died."""
    key = (backend, device)
    worker = _WORKERS.get(key)
    if worker is None or not worker.alive():
        worker = _WORKERS[key] = BackendWorker(backend, device, threads=_SETTINGS["threads"])
    return worker


@atexit.register
def close_workers() -> None:
    """Shut down every shared worker (also run at interpreter exit)."""
    while _WORKERS:
        _, worker = _WORKERS.popitem()
        worker.close()


def unavailable_reason(arm: str, device: str = "cpu") -> str | None:
    """Why an arm cannot run on `device`, or None when it can. On a GPU this starts the
    worker (only it can ask its backend); on the CPU it checks the installed packages."""
    backend = _backend(arm)
    missing = [m for m in ("keras",) + _PACKAGES[backend] if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{arm}: {', '.join(missing)} not installed in this environment "
                f"({_INSTALL[backend]})")
    if device == "gpu" and (backend, device) not in _UNAVAILABLE:
        try:
            shared_worker(backend, device)
        except BackendUnavailable as exc:
            _UNAVAILABLE[(backend, device)] = f"{arm}: {exc}"
    return _UNAVAILABLE.get((backend, device))


def _backend(arm: str) -> str:
    try:
        return ARMS[arm]
    except KeyError:
        raise ValueError(f"unknown arm {arm!r}; expected one of {', '.join(ARMS)}") from None


@dataclass(frozen=True)
class RemoteOptimizer:
    """An optimizer living in the worker, by number, and the recipe it was made from."""
    number: int
    recipe: object


@dataclass(frozen=True)
class StepTimes:
    seconds: np.ndarray   # one entry per timed step
    compiled: bool        # whether Keras ran the step compiled (its resolved jit_compile)


class KerasBackendFramework:
    """The adapter interface for the Keras twins on one Keras backend, run in a worker.

    mode: "eager" or "compiled" for the training step (Keras's jit_compile False / True);
    None takes Keras's own default for the backend (DEFAULT_MODE).
    """

    def __init__(self, arm: str, device: str = "cpu", mode: str | None = None,
                 worker: BackendWorker | None = None):
        self.backend = _backend(arm)
        self.name, self.device = arm, device
        self.mode = mode or DEFAULT_MODE[self.backend]
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.worker = worker or shared_worker(self.backend, device)

    def _call(self, model: TwinModel, op: str, **fields):
        return self.worker.call(op, model=model.net, **fields)

    # -- building and moving weights ---------------------------------------------------------
    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel:
        """dtype float64 too (the BatchNorm policy's float64 runs, twinbench/tolerances.py;
        on JAX the worker turns x64 on around that model's requests only)."""
        reply = self.worker.call("build", arch=arch.name, seed=seed, dtype=dtype)
        return TwinModel(arch=arch, net=int(reply["model"]), dtype=dtype)

    def get_weights(self, model: TwinModel) -> dict[str, np.ndarray]:
        return npz_messages.unpack("w:", self._call(model, "get_weights"))

    def set_weights(self, model: TwinModel, weights: dict[str, np.ndarray]) -> None:
        check_weights(model.arch, weights)
        self._call(model, "set_weights", **npz_messages.pack(
            "w:", {k: np.asarray(v, dtype=model.dtype) for k, v in weights.items()}))

    def parameter_count(self, model: TwinModel) -> int:
        return sum(w.size for w in self.get_weights(model).values())

    # -- computing ---------------------------------------------------------------------------
    def _images(self, model: TwinModel, images: np.ndarray) -> np.ndarray:
        check_images(images)
        return images.astype(model.dtype, copy=False)

    def forward(self, model: TwinModel, images: np.ndarray) -> np.ndarray:
        return self._call(model, "forward", images=self._images(model, images))["logits"]

    def loss(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
             training: bool = True) -> float:
        """Cross-entropy plus the model's L2 terms, without gradients; training=False:
        BatchNorm on its moving statistics (a training-mode call updates them, as in
        TensorFlow and torch)."""
        check_labels(labels, len(images))
        return float(self._call(model, "loss", images=self._images(model, images),
                                labels=labels, training=training)["loss"])

    def loss_and_gradients(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
                           wrt_inputs: bool = False, training: bool = True):
        """(cross-entropy plus the L2 terms, {canonical weight name: gradient}); '__input__'
        holds dL/dx (NHWC). training=False: BatchNorm normalizes with its moving statistics
        (which then get gradients; in training mode theirs are zero)."""
        check_labels(labels, len(images))
        reply = self._call(model, "loss_and_gradients", images=self._images(model, images),
                           labels=labels, wrt_inputs=wrt_inputs, training=training)
        return float(reply["loss"]), npz_messages.unpack("g:", reply)

    # -- training ----------------------------------------------------------------------------
    def make_optimizer(self, model: TwinModel, recipe) -> RemoteOptimizer:
        """Keras's Adam or SGD with momentum, as the recipe says (the TensorFlow arm's own)."""
        reply = self.worker.call("make_optimizer", optimizer=recipe.optimizer, lr=recipe.lr,
                                 momentum=recipe.momentum, beta_1=recipe.beta_1,
                                 beta_2=recipe.beta_2, epsilon=recipe.epsilon)
        return RemoteOptimizer(number=int(reply["optimizer"]), recipe=recipe)

    def set_learning_rate(self, model: TwinModel, optimizer: RemoteOptimizer, lr: float) -> None:
        """A recipe's per-epoch schedule: the worker assigns the optimizer's learning-rate
        variable in place, as the TensorFlow adapter does (Keras's step reads it each call)."""
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.worker.call("set_learning_rate", optimizer=optimizer.number, lr=lr)

    def release(self, model: TwinModel | None = None, optimizer: RemoteOptimizer | None = None,
                data: tuple[int, ...] = ()) -> None:
        """Let the worker drop a model, an optimizer and datasets (their memory with them)."""
        self.worker.call("release", models=[model.net] if model is not None else [],
                         optimizers=[optimizer.number] if optimizer is not None else [],
                         datasets=list(data))

    def _step_fields(self, optimizer: RemoteOptimizer, mode: str | None) -> dict:
        return {"optimizer": optimizer.number, "mode": mode or self.mode}

    def train_step(self, model: TwinModel, optimizer: RemoteOptimizer, images: np.ndarray,
                   labels: np.ndarray) -> float:
        """One step of Keras's own train step (train_on_batch); the loss before the update."""
        check_labels(labels, len(images))
        return float(self._call(model, "train_step", images=self._images(model, images),
                                labels=labels, **self._step_fields(optimizer, None))["loss"])

    def prepare_data(self, model: TwinModel, images: np.ndarray, labels: np.ndarray) -> int:
        """Send prepared NHWC images (in the model's dtype) and labels to the worker once; a
        handle back."""
        check_images(images)
        check_labels(labels, len(images))
        return int(self.worker.call("prepare_data", images=self._images(model, images),
                                    labels=labels)["data"])

    def fit_epoch(self, model: TwinModel, optimizer: RemoteOptimizer, data: int,
                  batch_size: int, order: np.ndarray) -> float:
        """One epoch of Keras's fit in the given sample order (indices into the prepared
        data), last batch partial; the mean of the batch losses."""
        order = np.asarray(order)
        if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
            raise ValueError(f"order must be a 1-D array of sample indices, got {order.dtype} "
                             f"{order.shape}")
        return float(self._call(model, "fit_epoch", data=data, order=order,
                                batch_size=batch_size,
                                **self._step_fields(optimizer, None))["loss"])

    def evaluate(self, model: TwinModel, data: int, batch_size: int = 1000) -> float:
        """Top-1 accuracy over prepared data, in large batches."""
        return float(self._call(model, "evaluate", data=data, batch_size=batch_size)["accuracy"])

    def time_steps(self, model: TwinModel, optimizer: RemoteOptimizer, images: np.ndarray,
                   labels: np.ndarray, steps: int, warmup: int = 3,
                   mode: str | None = None, phase: str = "train",
                   iterations: int = 1) -> StepTimes:
        """Seconds per step in each of `steps` timed rounds of `iterations` steps, timed inside
        the worker (no channel cost), each round ended by a device synchronization, after
        `warmup` untimed rounds that absorb tracing and compilation. The batch is made
        resident on the device before the rounds. mode: "eager" or "compiled"; phase:
        "train" (Keras's train_on_batch) or "infer" (predict_on_batch)."""
        check_labels(labels, len(images))
        if steps < 1 or warmup < 0 or iterations < 1:
            raise ValueError(f"need steps >= 1, warmup >= 0 and iterations >= 1, got {steps}, "
                             f"{warmup} and {iterations}")
        if phase not in ("train", "infer"):
            raise ValueError(f"unknown phase {phase!r}; expected train or infer")
        reply = self._call(model, "time_steps", images=self._images(model, images),
                           labels=labels, steps=steps, warmup=warmup, phase=phase,
                           iterations=iterations, **self._step_fields(optimizer, mode))
        return StepTimes(seconds=reply["seconds"], compiled=bool(reply["jit_compile"]))

    # -- what a throughput row records (the other adapters' methods of the same names) --------
    def threads(self) -> int:
        """CPU threads the worker's backend uses (torch: pinned; JAX: the usable cores)."""
        return int(self.worker.info["threads"])

    def precision_policy(self) -> dict:
        """Full fp32, as the other arms: the worker turns TF32 off on a GPU (torch's switches;
        JAX's matmul precision "highest"); a CPU computes plain fp32 either way."""
        return {"tf32": False, "autocast": None}

    def pin_precision(self) -> None:
        """Nothing to do here: the worker pinned full fp32 when it started."""

    def is_oom(self, exc: BaseException) -> bool:
        """An out-of-memory error inside the worker (it reaches us as a WorkerError whose
        message names the backend's own exception)."""
        return isinstance(exc, WorkerError) and any(m in str(exc) for m in _OOM_MESSAGES)

    def release_memory(self) -> None:
        """Nothing held here; the worker frees a case's objects when they are released."""

    @contextlib.contextmanager
    def recipe_settings(self, recipe):
        """Nothing to change per recipe (Keras's own fit loop runs in the worker); yields what
        the result row records: the backend, its versions, the training step's mode and the
        threads it computes on (torch: the session's --threads; JAX: the usable cores XLA's
        pool takes), as the TensorFlow and torch rows do."""
        yield {"keras_backend": self.backend, "mode": self.mode, "threads": self.threads(),
               **{k: v for k, v in self.worker.info.items() if k.startswith("version:")}}

    def synchronize(self) -> None:
        """Nothing to wait for here: every request returns after its work is done."""
