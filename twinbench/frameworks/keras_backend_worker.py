"""A process that runs the Keras twins on Keras 3's torch or JAX backend and serves requests.

Keras reads KERAS_BACKEND once, when it is first imported, and the suites' own process runs
Keras on TensorFlow. Each other backend therefore lives in a process of its own, started and
spoken to by twinbench/frameworks/keras_backends.py:

    python twinbench/frameworks/keras_backend_worker.py --backend jax --device cpu
    python -m twinbench.frameworks.keras_backend_worker --backend torch --device cpu

Started as a file (what the client does) it imports none of twinbench's package set-up
before choosing its backend. Requests and replies are npz messages on stdin/stdout
(twinbench/npz_messages.py): NumPy at the boundary, weights in the canonical layout
(models/layout.py), never pickle. Anything a library prints goes to stderr, not into the
channel. TensorFlow is never imported here: the worker refuses to start if it already was,
and blocks any later import with an error (docs/methodology.md#import-order; the arms'
parity: docs/methodology.md#parity).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.abc
import importlib.machinery
import itertools
import operator
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    # Run as a file, Python put this folder on the path; the imports below need the repository.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

BACKENDS = ("torch", "jax")
DEVICES = ("cpu", "gpu")
# What a model's training step runs as: op by op, or traced and compiled (jax.jit, or
# torch.compile for the torch backend): Keras's `jit_compile` False / True.
MODES = ("eager", "compiled")
# Keras's own choice for jit_compile="auto" (keras/src/trainers/trainer.py,
# _resolve_auto_jit_compile): compiled on JAX, eager on torch. Pinned from Keras's code.
DEFAULT_MODE = {"jax": "compiled", "torch": "eager"}
# The model dtypes a worker builds: float32, and float64 for the BatchNorm policy of
# twinbench/tolerances.py (each arm's float32 error is measured against its own float64 run).
DTYPES = ("float32", "float64")


class Unavailable(RuntimeError):
    """The backend cannot run on the requested device here (the reason is the message)."""


class _RefuseTensorFlow(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """An import hook that turns any import of TensorFlow into an ImportError saying why.

    Finding is allowed (a spec with no origin: torch._dynamo asks find_spec("tensorflow")
    to list third-party folders, and a lookup loads nothing); loading raises."""

    def __init__(self, backend: str):
        self.backend = backend

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} must not be imported in the keras-{self.backend} "
                          f"worker: Keras runs on {self.backend} here, and TensorFlow in this "
                          "process would break the import-order rule (torch first) and make "
                          "the arm's numbers partly TensorFlow's", name=spec.name)

    def exec_module(self, module):   # never reached: create_module refuses
        raise ImportError(f"{module.__name__} must not be imported here")


def refuse_tensorflow(backend: str) -> None:
    """Refuse to run if TensorFlow (or Keras on another backend) is loaded; block it from now."""
    if "tensorflow" in sys.modules:
        raise RuntimeError(f"keras-{backend} worker: TensorFlow is already imported in this "
                           "process; the worker must start in a fresh process without it")
    if "keras" in sys.modules:
        raise RuntimeError(f"keras-{backend} worker: Keras was imported before the worker "
                           "chose its backend; start the worker in a fresh process")
    if not any(isinstance(f, _RefuseTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _RefuseTensorFlow(backend))


class Worker:
    """The models, optimizers and datasets of one backend process, addressed by number."""

    def __init__(self, backend: str, device: str, threads: int | None = None):
        self.backend, self.device = backend, device
        if backend == "torch":
            import torch
            import torchvision  # noqa: F401  (torch and torchvision before anything else)
            self.torch = torch
            if threads:
                torch.set_num_threads(threads)
            if device == "gpu":
                if not torch.cuda.is_available():
                    raise Unavailable("no CUDA GPU is visible to torch on this machine")
                # The precision policy of the other arms: full fp32, TF32 off.
                torch.backends.cuda.matmul.allow_tf32 = False
                torch.backends.cudnn.allow_tf32 = False
        import keras

        import models
        from twinbench import npz_messages
        self.keras, self.models, self.messages = keras, models, npz_messages
        if keras.backend.backend() != backend:
            raise RuntimeError(f"Keras chose the {keras.backend.backend()!r} backend, not "
                               f"{backend!r} (is ~/.keras/keras.json overriding KERAS_BACKEND?)")
        if backend == "jax":
            import jax
            self.jax = jax
            if device == "gpu":
                if not any(d.platform == "gpu" for d in jax.devices()):
                    raise Unavailable("no GPU is visible to JAX on this machine (a CUDA build "
                                      "of jaxlib is needed: pip install 'jax[cuda12]')")
                # TF32 off, as the other arms: XLA would otherwise use it for float32 matmuls.
                jax.config.update("jax_default_matmul_precision", "highest")
        from keras.src.backend.common import dtypes
        self._promotion = dtypes.BIT64_TO_BIT32_DTYPE   # Keras's float64 rule: see _float64
        # A Keras loss computes in its own dtype (float32 unless told), whatever the logits'
        # dtype: a float64 model needs a float64 loss (as the TensorFlow adapter's _LOSSES).
        self.loss_fns = {
            "float32": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "float64": keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                  dtype="float64")}
        self.nets: dict[int, _Net] = {}
        self.optimizers: dict[int, object] = {}
        self.datasets: dict[int, tuple] = {}
        # One counter for models, optimizers and datasets: a number is never reused, so a
        # released one can never be mistaken for a newer object.
        self._numbers = itertools.count(1)

    # -- the reply to the client's start ------------------------------------------------------
    def hello(self) -> dict:
        versions = {"keras": self.keras.__version__}
        if self.backend == "torch":
            versions["torch"] = self.torch.__version__
            where = (self.torch.cuda.get_device_name(0) if self.device == "gpu" else "cpu")
        else:
            import jaxlib
            versions.update(jax=self.jax.__version__, jaxlib=jaxlib.__version__)
            where = str(self.jax.devices()[0].device_kind)
        if self.backend == "torch":
            threads = self.torch.get_num_threads()
        else:
            # XLA's CPU thread pool takes the usable cores; JAX offers no switch for it.
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return {"ready": True, "backend": self.backend, "device": where, "pid": os.getpid(),
                "threads": str(threads),
                **{f"version:{k}": v for k, v in versions.items()}}

    # -- requests ------------------------------------------------------------------------------
    def handle(self, op: str, req: dict) -> dict:
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            ops = sorted(n[3:] for n in dir(self) if n.startswith("op_"))
            raise ValueError(f"unknown request {op!r}; expected one of {', '.join(ops)}")
        with self._precision(op, req):
            return handler(req)

    def _precision(self, op: str, req: dict):
        """What a float64 model's requests (its build included) run under; a float32 model's,
        and those of no model, run exactly as before (suites/test_keras_backends.py checks
        that they compute the same bits after float64 work)."""
        if op == "build":
            dtype = self.messages.text(req, "dtype")
        elif "model" in req and int(req["model"]) in self.nets:
            dtype = self.nets[int(req["model"])].dtype
        else:
            dtype = "float32"   # no model: optimizers' own variables, datasets kept as NumPy
        return self._float64() if dtype == "float64" else contextlib.nullcontext()

    @contextlib.contextmanager
    def _float64(self):
        """float64 as Keras computes it on TensorFlow, for the duration of one request.

        Keras's type promotion turns float64 into float32 on every backend but TensorFlow
        (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE, "aligned with JAX's
        default"), so a float64 model's Dense layers (ops.matmul) computed in float32: on
        torch its logits were 3.7e-7 (lenet) and 4.1e-7 (resnet8) of max|logits| from the
        TensorFlow twin's float64 ones, float32 rounding, where float64 agrees to 6e-16 with
        it kept. The table entry is restored after the request. JAX also computes float64 only
        with x64 on (off, it makes float64 arrays float32); its global switch would change
        what float32 runs compute (Python numbers and integer arrays become 64-bit), so it is
        on only here, through JAX's scoped switch."""
        table = self._promotion
        kept = table["float64"]
        table["float64"] = "float64"
        try:
            with (self.jax.enable_x64(True) if self.backend == "jax"
                  else contextlib.nullcontext()):
                yield
        finally:
            table["float64"] = kept

    def _net(self, req) -> _Net:
        number = int(req["model"])
        if number not in self.nets:
            raise ValueError(f"no model {number} in this worker (built: {sorted(self.nets)})")
        return self.nets[number]

    def _tensor(self, array):
        return self.keras.ops.convert_to_tensor(array)

    def _numpy(self, tensor):
        return self.keras.ops.convert_to_numpy(tensor)

    def _no_grad(self):
        return self.torch.no_grad() if self.backend == "torch" else contextlib.nullcontext()

    def _loss(self, net, labels, logits, regularization):
        """Mean cross-entropy from logits plus the model's regularization terms (Keras's
        kernel_regularizer): the training loss as the TensorFlow adapter's _loss, and Keras's
        own train step, compute it."""
        loss = self.loss_fns[net.dtype](labels, logits)
        return loss + functools.reduce(operator.add, regularization) if regularization else loss

    @staticmethod
    def _training(req) -> bool:
        """training=False: BatchNorm normalizes with its moving statistics (the adapters'
        default is training mode)."""
        return bool(req["training"]) if "training" in req else True

    def op_build(self, req) -> dict:
        arch = self.models.get(self.messages.text(req, "arch"))
        dtype = self.messages.text(req, "dtype")
        if dtype not in DTYPES:
            raise ValueError(f"keras-{self.backend}: unknown model dtype {dtype!r}; expected one "
                             f"of {', '.join(DTYPES)}")
        self.keras.utils.set_random_seed(int(req["seed"]))
        net = _Net(arch, arch.keras_model(dtype=dtype), dtype)
        number = next(self._numbers)
        self.nets[number] = net
        return {"model": number, "parameters": net.keras.count_params()}

    def op_set_weights(self, req) -> dict:
        net = self._net(req)
        for name, array in self.messages.unpack("w:", req).items():
            net.variables[name].assign(array)
        return {}

    def op_get_weights(self, req) -> dict:
        net = self._net(req)
        return self.messages.pack("w:", {n: self._numpy(v.value) for n, v in net.variables.items()})

    def op_forward(self, req) -> dict:
        net = self._net(req)
        with self._no_grad():
            return {"logits": self._numpy(net.keras(self._tensor(req["images"]), training=False))}

    def op_loss(self, req) -> dict:
        """The loss without gradients. In training mode the call updates BatchNorm's moving
        statistics, as a training-mode call does in TensorFlow and torch (the adapters' loss)."""
        net = self._net(req)
        with self._no_grad():
            logits = net.keras(self._tensor(req["images"]), training=self._training(req))
            # model.losses after the call: the regularization terms of the current weights
            loss = self._loss(net, self._tensor(req["labels"]), logits, net.keras.losses)
            return {"loss": self._numpy(loss)}

    def op_loss_and_gradients(self, req) -> dict:
        """The loss and its gradient for every canonical variable, BatchNorm's moving
        statistics included (as the TensorFlow adapter's tape watches them): zero in training
        mode, where the batch's statistics normalize, real in inference mode. A variable the
        loss does not depend on gets zeros, as there."""
        net = self._net(req)
        wrt_inputs = bool(req["wrt_inputs"])
        gradient_of = (self._torch_gradients if self.backend == "torch" else self._jax_gradients)
        loss, grads, input_grad = gradient_of(net, req["images"], req["labels"], wrt_inputs,
                                              self._training(req))
        out = {name: (np.zeros(net.variables[name].shape, net.dtype) if g is None
                      else self._numpy(g)) for name, g in grads.items()}
        if wrt_inputs:
            out["__input__"] = self._numpy(input_grad)
        return {"loss": self._numpy(loss), **self.messages.pack("g:", out)}

    def _torch_gradients(self, net, images, labels, wrt_inputs, training):
        x = self._tensor(images)
        x.requires_grad_(wrt_inputs)
        tensors = [v.value for v in net.variables.values()]
        # Non-trainable variables (BatchNorm's moving statistics) track no gradient; they do
        # for this call only. A training-mode call still updates them (Keras assigns under
        # no_grad), as in TensorFlow and torch.
        frozen = [t for t in tensors if not t.requires_grad]
        try:
            for t in frozen:
                t.requires_grad_(True)
            logits = net.keras(x, training=training)
            loss = self._loss(net, self._tensor(labels), logits, net.keras.losses)
            grads = self.torch.autograd.grad(loss, tensors + ([x] if wrt_inputs else []),
                                             allow_unused=True)   # unused: None, then zeros
        finally:
            for t in frozen:
                t.requires_grad_(False)
        return (loss.detach(), dict(zip(net.variables, grads)),
                grads[-1] if wrt_inputs else None)

    def _jax_gradients(self, net, images, labels, wrt_inputs, training):
        model, y = net.keras, self._tensor(labels)
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_of(trainable, non_trainable, x):
            # return_losses: the regularization terms of the traced weights (model.losses
            # would read the variables' stored values, which carry no gradient)
            logits, updated, regularization = model.stateless_call(
                trainable, non_trainable, x, training=training, return_losses=True)
            return self._loss(net, y, logits, regularization), updated

        (loss, updated), (g_trainable, g_non_trainable, input_grad) = self.jax.value_and_grad(
            loss_of, argnums=(0, 1, 2), has_aux=True)(trainable, non_trainable,
                                                      self._tensor(images))
        # A training-mode call updates state (BatchNorm's moving statistics) in TensorFlow and
        # torch; the stateless call returns it instead, so write it back to match them (in
        # inference mode the values come back unchanged).
        for v, value in zip(model.non_trainable_variables, updated):
            v.assign(value)
        by_variable = {id(v): g for v, g in zip(
            model.trainable_variables + model.non_trainable_variables,
            list(g_trainable) + list(g_non_trainable))}
        return loss, {n: by_variable[id(v)] for n, v in net.variables.items()}, input_grad

    # -- training ------------------------------------------------------------------------------
    def op_make_optimizer(self, req) -> dict:
        kind, lr = self.messages.text(req, "optimizer"), float(req["lr"])
        if kind == "adam":
            optimizer = self.keras.optimizers.Adam(
                learning_rate=lr, beta_1=float(req["beta_1"]), beta_2=float(req["beta_2"]),
                epsilon=float(req["epsilon"]))
        elif kind == "sgd":
            optimizer = self.keras.optimizers.SGD(learning_rate=lr, momentum=float(req["momentum"]))
        else:
            raise ValueError(f"unknown optimizer {kind!r}; expected adam or sgd")
        number = next(self._numbers)
        self.optimizers[number] = optimizer
        return {"optimizer": number}

    def op_set_learning_rate(self, req) -> dict:
        """A recipe's per-epoch schedule: the optimizer's learning-rate variable, assigned in
        place (as the TensorFlow adapter does): Keras's train step reads it on every call, the
        compiled one too (it is one of the optimizer's variables, passed in, not a constant)."""
        number = int(req["optimizer"])
        if number not in self.optimizers:
            raise ValueError(f"no optimizer {number} in this worker")
        self.optimizers[number].learning_rate.assign(float(req["lr"]))
        return {}

    def _compiled(self, req) -> _Net:
        """The request's model, compiled with the request's optimizer and mode (Keras's own
        train step, the one fit runs); recompiled only when either changes."""
        net = self._net(req)
        number, mode = int(req["optimizer"]), self.messages.text(req, "mode")
        if number not in self.optimizers:
            raise ValueError(f"no optimizer {number} in this worker")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if net.compiled_with != (number, mode):
            net.keras.compile(optimizer=self.optimizers[number], loss=self.loss_fns[net.dtype],
                              jit_compile=mode == "compiled")
            net.compiled_with = (number, mode)
        return net

    def op_train_step(self, req) -> dict:
        net = self._compiled(req)
        return {"loss": net.keras.train_on_batch(req["images"], req["labels"])}

    def op_prepare_data(self, req) -> dict:
        """Keep a dataset resident here, so that an epoch sends only its sample order."""
        number = next(self._numbers)
        self.datasets[number] = (req["images"], req["labels"])
        return {"data": number}

    def _dataset(self, req) -> tuple:
        number = int(req["data"])
        if number not in self.datasets:
            raise ValueError(f"no dataset {number} in this worker")
        return self.datasets[number]

    def op_fit_epoch(self, req) -> dict:
        """One epoch of Keras's own fit in the caller's sample order, last batch partial;
        the mean of the batch losses, as the TensorFlow arm reports it."""
        net = self._compiled(req)
        images, labels = self._dataset(req)
        order = req["order"]
        history = net.keras.fit(images[order], labels[order], batch_size=int(req["batch_size"]),
                                epochs=1, shuffle=False, verbose=0)
        return {"loss": history.history["loss"][0]}

    def op_evaluate(self, req) -> dict:
        net = self._net(req)
        images, labels = self._dataset(req)
        logits = net.keras.predict(images, batch_size=int(req["batch_size"]), verbose=0)
        return {"accuracy": float((logits.argmax(axis=1) == labels).mean())}

    def op_time_steps(self, req) -> dict:
        """Seconds per step in each of `steps` timed rounds of `iterations` steps, each round
        ended by a device synchronization (the throughput tier's protocol, twinbench/bench.py),
        after `warmup` untimed rounds (which also absorb tracing and compilation). The batch
        is made resident on the device once, before any round, so no round copies it.
        phase "train": Keras's train_on_batch; "infer": predict_on_batch (inference mode)."""
        net = self._compiled(req)
        phase = self.messages.text(req, "phase") if "phase" in req else "train"
        iterations = int(req["iterations"]) if "iterations" in req else 1
        if phase not in ("train", "infer") or iterations < 1:
            raise ValueError(f"need phase train or infer and iterations >= 1, got {phase!r} "
                             f"and {iterations}")
        images, labels = self._tensor(req["images"]), self._tensor(req["labels"])
        if phase == "train":
            def step():
                net.keras.train_on_batch(images, labels)
        else:
            def step():
                net.keras.predict_on_batch(images)
        for _ in range(int(req["warmup"]) * iterations):
            step()
        self._synchronize(net)
        seconds = []
        for _ in range(int(req["steps"])):
            start = time.perf_counter()
            for _ in range(iterations):
                step()
            self._synchronize(net)
            seconds.append((time.perf_counter() - start) / iterations)
        # What Keras actually ran: it turns jit_compile off by itself in some cases.
        return {"seconds": seconds, "jit_compile": bool(net.keras.jit_compile)}

    def op_release(self, req) -> dict:
        """Forget models, optimizers and datasets by number (their memory goes with them)."""
        for field, store in (("models", self.nets), ("optimizers", self.optimizers),
                             ("datasets", self.datasets)):
            for number in (req[field].tolist() if field in req else []):
                store.pop(int(number), None)
        gc.collect()
        if self.backend == "torch" and self.device == "gpu":
            self.torch.cuda.empty_cache()
        return {}

    def _synchronize(self, net) -> None:
        """Wait until the device has finished all queued work on the model."""
        if self.backend == "jax":
            self.jax.block_until_ready([v.value for v in net.keras.variables])
        elif self.device == "gpu":
            self.torch.cuda.synchronize()


class _Net:
    """A Keras model and its weights by canonical name ('conv1/kernel' -> layer attribute)."""

    def __init__(self, arch, model, dtype: str):
        self.arch, self.keras, self.dtype = arch, model, dtype
        self.variables = {}
        for name in arch.canonical_shapes():
            layer, attribute = name.split("/")
            self.variables[name] = getattr(model.get_layer(layer), attribute)
        self.compiled_with = None   # (optimizer number, mode) of the last compile


def serve(worker: Worker, requests, replies, messages) -> None:
    """Answer requests until 'shutdown' or until the client closes the channel."""
    while True:
        try:
            req = messages.receive(requests)
        except messages.ChannelClosed:
            return          # the client went away: nothing left to answer
        op = messages.text(req, "op")
        if op == "shutdown":
            messages.send(replies, {"ok": True})
            return
        try:
            reply = worker.handle(op, req)
        except Exception as exc:   # reported to the client, which raises it there
            reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if "tensorflow" in sys.modules:   # the import hook should make this impossible
            raise RuntimeError(f"TensorFlow was loaded in the keras-{worker.backend} worker "
                               f"while serving {op!r}")
        messages.send(replies, reply)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch: CPU threads")
    args = parser.parse_args(argv)
    try:
        refuse_tensorflow(args.backend)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 3
    os.environ["KERAS_BACKEND"] = args.backend   # read once, when Keras is first imported
    if args.device == "cpu":
        # Hide any GPU so that both backends place everything on the CPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["JAX_PLATFORMS"] = "cpu"
    # The channel is this process's original stdout; stdout itself now goes to stderr, so
    # that nothing a library prints can corrupt a message.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    try:
        worker = Worker(args.backend, args.device, args.threads)
    except Unavailable as exc:
        from twinbench import npz_messages
        npz_messages.send(replies, {"unavailable": str(exc)})
        return 0
    worker.messages.send(replies, worker.hello())
    serve(worker, requests, replies, worker.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
