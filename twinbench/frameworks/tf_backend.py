"""The TensorFlow (Keras 3) adapter (see twinbench/frameworks/__init__.py for the interface)."""
from __future__ import annotations

import contextlib
import gc
import os

import numpy as np

from models.layout import check_weights
from models.spec import BN_WEIGHTS
from twinbench import imports
from twinbench.frameworks import (PreparedData, TwinModel, check_images, check_labels,
                                  global_rngs_kept, raised_from)
from twinbench.frameworks.modes import Step

tf = imports.tensorflow()   # torch and torchvision are loaded first inside
import keras  # noqa: E402  (after imports.tensorflow(), which fixes the backend)

# Keras's fit runs this many training steps per call of its compiled train function (the
# steps, their order and the last partial batch are unchanged). At 1, fit's per-step Python
# and tf.data overhead held the loop to 53-77% of the benchmark's bare step on the 2-core CPU
# box; at 16 it reached 90-110% of the step (docs/methodology.md#loop-vs-step,
# scripts/loop_vs_step.py).
FIT_STEPS_PER_EXECUTION = 16

_loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# A Keras loss computes in its own dtype (float32 by default), whatever the logits' dtype:
# a float64 model (the finite-difference gradient checks) needs a float64 loss.
_LOSSES = {"float32": _loss_fn,
           "float64": keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")}
# OOMs that reach us as TensorFlow's generic OpError (e.g. raised inside XLA).
OOM_MESSAGES = ("RESOURCE_EXHAUSTED", "OOM when allocating")


def _variables(model: TwinModel):
    """Canonical weight name -> Keras variable, in the architecture's layer order (BatchNorm's
    moving statistics included: they are weights that move between the frameworks)."""
    out = {}
    for layer in model.arch.layers:
        k_layer = model.net.get_layer(layer.name)
        if layer.kind == "bn":
            out.update({f"{layer.name}/{k}": getattr(k_layer, k) for k in BN_WEIGHTS})
            continue
        out[f"{layer.name}/kernel"] = k_layer.kernel
        out[f"{layer.name}/bias"] = k_layer.bias
    return out


def _loss(model: TwinModel, labels, logits):
    """Mean cross-entropy from logits plus the model's regularization terms (Keras's
    kernel_regularizer; fit adds them the same way): the training loss in both frameworks."""
    loss = _LOSSES[model.dtype](labels, logits)
    return loss + tf.add_n(model.net.losses) if model.net.losses else loss


class TensorFlowFramework:
    name = "tf"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
        self.pin_precision()

    # -- session, precision, memory ------------------------------------------------------------
    @classmethod
    def configure(cls, threads: int, determinism: bool) -> list[str]:
        """Session-wide settings before any model: intra-op threads, GPU memory growth,
        deterministic ops. Returns notes for the report header."""
        notes = []
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            for gpu in tf.config.list_physical_devices("GPU"):
                # Without growth TF takes nearly all GPU memory at start, starving torch.
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:
            # Raised when TF was initialised earlier in this process (e.g. a second
            # in-process session): the earlier settings stay; say so in the header.
            notes.append(f"TensorFlow settings unchanged: {exc}")
        if determinism:
            tf.config.experimental.enable_op_determinism()
        return notes

    @classmethod
    def describe(cls) -> str:
        gpus = [g.name for g in tf.config.list_physical_devices("GPU")]
        if not gpus:
            # run.sh exports the build it installed: plain TensorFlow sees no GPU on Linux, so
            # a GPU user must be able to tell "no GPU here" from "TensorFlow cannot see it".
            build = os.environ.get("TWINBENCH_TF_BUILD")
            gpus = [{"cpu": "no GPU (CPU-only TensorFlow install)",
                     "cuda": "no GPU visible to the CUDA build: check the NVIDIA driver"}
                    .get(build, "no GPU")]
        return (f"tensorflow {tf.__version__} (keras {keras.__version__} on "
                f"{keras.backend.backend()}, "
                f"{tf.config.threading.get_intra_op_parallelism_threads()} intra-op "
                f"threads, {', '.join(gpus)})")

    def pin_precision(self) -> None:
        """Full fp32: TensorFlow enables TF32 by default on Ampere and later
        (docs/methodology.md#gpu); a CPU computes plain fp32 either way."""
        if self.device == "gpu":
            tf.config.experimental.enable_tensor_float_32_execution(False)

    def precision_policy(self) -> dict:
        tf32 = (self.device == "gpu"
                and tf.config.experimental.tensor_float_32_execution_enabled())
        return {"tf32": bool(tf32), "autocast": None}

    def threads(self) -> int:
        n = tf.config.threading.get_intra_op_parallelism_threads()
        # 0 means "TensorFlow's default": one thread per usable core.
        return int(n) or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)

    def oom_errors(self) -> tuple[type, ...]:
        return (tf.errors.ResourceExhaustedError,)

    def is_oom(self, exc: BaseException) -> bool:
        return raised_from(exc, self.oom_errors(), tf.errors.OpError, OOM_MESSAGES)

    def release_memory(self) -> None:
        gc.collect()

    # -- building and moving weights ---------------------------------------------------------
    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel:
        """A fresh twin; seeds TensorFlow's and Keras's generators only (see Framework.build:
        keras.utils.set_random_seed also seeds Python's and NumPy's, which are restored)."""
        with global_rngs_kept():
            keras.utils.set_random_seed(seed)
            with tf.device(self.tf_device):
                net = arch.keras_model(dtype=dtype)
        return TwinModel(arch=arch, net=net, dtype=dtype)

    def to_tensor(self, model: TwinModel, images: np.ndarray):
        """NHWC NumPy -> NHWC tensor on this device, in the model's dtype."""
        check_images(images)
        with tf.device(self.tf_device):
            return tf.convert_to_tensor(images.astype(model.dtype, copy=False))

    def from_tensor(self, x) -> np.ndarray:
        return np.asarray(x)

    def get_weights(self, model: TwinModel) -> dict[str, np.ndarray]:
        return {name: v.numpy() for name, v in _variables(model).items()}

    def set_weights(self, model: TwinModel, weights: dict[str, np.ndarray]) -> None:
        check_weights(model.arch, weights)
        for name, var in _variables(model).items():
            var.assign(weights[name].astype(model.dtype, copy=False))

    def parameter_count(self, model: TwinModel) -> int:
        return int(model.net.count_params())

    # -- computing ---------------------------------------------------------------------------
    def forward(self, model: TwinModel, images: np.ndarray) -> np.ndarray:
        x = self.to_tensor(model, images)
        with tf.device(self.tf_device):
            return model.net(x, training=False).numpy()

    def loss_and_gradients(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
                           wrt_inputs: bool = False, training: bool = True):
        """(mean cross-entropy, {canonical weight name: gradient}); '__input__' holds dL/dx (NHWC).
        training=False: BatchNorm normalizes with its moving statistics (which then get
        gradients; in training mode theirs are zero)."""
        check_labels(labels, len(images))
        x = self.to_tensor(model, images)
        variables = _variables(model)
        with tf.device(self.tf_device), tf.GradientTape() as tape:
            tape.watch([v.value for v in variables.values()])   # the moving statistics too
            if wrt_inputs:
                tape.watch(x)
            loss = _loss(model, labels, model.net(x, training=training))
        targets = list(variables.values()) + ([x] if wrt_inputs else [])
        grads = tape.gradient(loss, targets)
        out = {name: np.zeros(v.shape, model.dtype) if g is None else g.numpy()   # unused: zero
               for (name, v), g in zip(variables.items(), grads)}
        if wrt_inputs:
            out["__input__"] = grads[-1].numpy()
        return float(loss.numpy()), out

    def loss(self, model: TwinModel, images: np.ndarray, labels: np.ndarray,
             training: bool = True) -> float:
        check_labels(labels, len(images))
        with tf.device(self.tf_device):
            logits = model.net(self.to_tensor(model, images), training=training)
            return float(_loss(model, labels, logits))

    def feature_shapes(self, model: TwinModel, images: np.ndarray) -> dict[str, tuple]:
        names = [layer.name for layer in model.net.layers
                 if layer.name != "flatten" and not isinstance(layer, keras.layers.InputLayer)]
        probe = keras.Model(model.net.inputs, [model.net.get_layer(n).output for n in names])
        with tf.device(self.tf_device):
            outputs = probe(self.to_tensor(model, images), training=False)
        return {n: tuple(o.shape[1:]) for n, o in zip(names, outputs)}

    # -- training ----------------------------------------------------------------------------
    def make_optimizer(self, model: TwinModel, recipe):
        if recipe.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate=recipe.lr, beta_1=recipe.beta_1,
                                         beta_2=recipe.beta_2, epsilon=recipe.epsilon)
        return keras.optimizers.SGD(learning_rate=recipe.lr, momentum=recipe.momentum)

    def set_learning_rate(self, model: TwinModel, optimizer, lr: float) -> None:
        """A recipe's per-epoch schedule: the optimizer's learning-rate variable (read by the
        compiled step and by fit), assigned in place."""
        optimizer.learning_rate.assign(lr)

    def train_step(self, model: TwinModel, optimizer, images: np.ndarray, labels: np.ndarray) -> float:
        check_labels(labels, len(images))
        # XLA was 2.4x slower on the CPU box (docs/methodology.md#cpu-hosts): graph mode here.
        step = self._compiled_train_step(model, optimizer, jit_compile=False)
        x = self.to_tensor(model, images)
        with tf.device(self.tf_device):
            return float(step(x, tf.convert_to_tensor(labels)))

    def _compiled_train_step(self, model: TwinModel, optimizer, *, jit_compile: bool):
        """The one TensorFlow training step, a tf.function (with XLA when jit_compile),
        traced once per (model, optimizer, jit_compile) and cached on the model."""
        key = ("train", jit_compile)
        cached = model.compiled.get(key)
        if cached is not None and cached[0] is optimizer:
            return cached[1]
        # BatchNorm's moving statistics are weights but not trainable: the optimizer skips them.
        variables = [v for v in _variables(model).values() if v.trainable]
        if not optimizer.built:
            optimizer.build(variables)   # slots exist before tracing, never created inside it
        device = self.tf_device

        @tf.function(jit_compile=jit_compile)
        def step(x, y):
            with tf.device(device):
                with tf.GradientTape() as tape:
                    loss = _loss(model, y, model.net(x, training=True))
                optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
                return loss
        model.compiled[key] = (optimizer, step)
        return step

    def synchronize(self) -> None:
        if self.device == "gpu":
            # GPU work is asynchronous; a timed region must end on the device, not at launch.
            tf.test.experimental.sync_devices()

    # -- whole-epoch training and evaluation (the accuracy suite's hot path) -----------------
    def prepare_data(self, model: TwinModel, images: np.ndarray, labels: np.ndarray):
        """Prepared float32 NHWC images and labels as tensors on this device, made once per
        run (the NumPy labels are kept for scoring)."""
        x = self.to_tensor(model, images)
        with tf.device(self.tf_device):
            return PreparedData(x, tf.constant(labels), labels)

    def fit_epoch(self, model: TwinModel, optimizer, data, batch_size: int, order: np.ndarray) -> float:
        """One epoch in the given sample order through Keras's own fit (the reference
        program's training loop), last batch partial; returns the mean of the batch losses.

        The epoch's input is a dataset of index batches gathered from the resident tensors:
        handing fit the permuted NumPy arrays instead copied the whole training set into a
        new tensor every epoch (11.6-12.5 s per epoch against 7.2-8.1 s this way, measured
        on the CPU box)."""
        x, y = data.images, data.labels
        if getattr(model.net, "optimizer", None) is not optimizer:
            model.net.compile(optimizer=optimizer, loss=_LOSSES[model.dtype],
                              steps_per_execution=FIT_STEPS_PER_EXECUTION)
        batches = (tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
                   .map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
                   .prefetch(tf.data.AUTOTUNE))
        with tf.device(self.tf_device):
            history = model.net.fit(batches, epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][0])

    def evaluate(self, model: TwinModel, data, batch_size: int = 1000) -> float:
        """Top-1 accuracy over prepared data, in large batches."""
        x, labels = data.images, data.labels_np
        if "predict" not in model.compiled:
            model.compiled["predict"] = tf.function(
                lambda t: tf.argmax(model.net(t, training=False), 1))
        correct = 0
        with tf.device(self.tf_device):
            for start in range(0, len(x), batch_size):
                pred = model.compiled["predict"](x[start:start + batch_size])
                correct += int(np.sum(pred.numpy() == labels[start:start + batch_size]))
        return correct / len(x)

    @contextlib.contextmanager
    def recipe_settings(self, recipe):
        """Nothing to change for TensorFlow (Keras's own fit loop is the fast path here);
        yields what the result row records: the intra-op thread count."""
        yield {"threads": tf.config.threading.get_intra_op_parallelism_threads()}

    # -- benchmark steps (twinbench/frameworks/modes.py registers the modes) ------------------
    def step(self, model: TwinModel, optimizer, data: PreparedData, phase: str, *,
             jit_compile: bool = False) -> Step:
        """The "graph" step (a tf.function without XLA, TensorFlow's default way to run a
        step, as Keras's fit does), or with jit_compile=True the "xla" one."""
        x, y = data.images, data.labels
        if phase == "train":
            train_step = self._compiled_train_step(model, optimizer, jit_compile=jit_compile)

            def run():
                return train_step(x, y)
        else:
            device = self.tf_device

            @tf.function(jit_compile=jit_compile)
            def infer_step(x):
                with tf.device(device):
                    return model.net(x, training=False)

            def run():
                return infer_step(x)
        return Step(run=run, sync=self.synchronize, model=model)
