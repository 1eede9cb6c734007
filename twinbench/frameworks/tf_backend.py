"""The TensorFlow (Keras 3) adapter (see twinbench/frameworks/__init__.py for the interface)."""
from __future__ import annotations

import contextlib

import numpy as np

from models.layout import check_weights
from models.spec import BN_WEIGHTS
from twinbench import imports
from twinbench.frameworks import TwinModel, check_images, check_labels

tf = imports.tensorflow()   # torch and torchvision are loaded first inside
import keras  # noqa: E402  (after imports.tensorflow(), which fixes the backend)

_loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# A Keras loss computes in its own dtype (float32 by default), whatever the logits' dtype:
# a float64 model (the finite-difference gradient checks) needs a float64 loss.
_LOSSES = {"float32": _loss_fn,
           "float64": keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")}


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
        if device == "gpu":
            # TensorFlow enables TF32 by default on Ampere and later; pin full fp32 (FACTS.md).
            tf.config.experimental.enable_tensor_float_32_execution(False)

    # -- building and moving weights ---------------------------------------------------------
    def build(self, arch, seed: int = 0, dtype: str = "float32") -> TwinModel:
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
        if model.compiled_step is None or model.compiled_step[0] is not optimizer:
            model.compiled_step = (optimizer, self._compile_step(model, optimizer))
        x = self.to_tensor(model, images)
        with tf.device(self.tf_device):
            return float(model.compiled_step[1](x, tf.convert_to_tensor(labels)))

    def _compile_step(self, model: TwinModel, optimizer):
        variables = [v for v in _variables(model).values() if v.trainable]

        @tf.function(jit_compile=False)   # XLA was 2.4x slower on the CPU box (FACTS.md)
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = _loss(model, y, model.net(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss
        return step

    def synchronize(self) -> None:
        if self.device == "gpu":
            # GPU work is asynchronous; a timed region must end on the device, not at launch.
            tf.test.experimental.sync_devices()

    # -- whole-epoch training and evaluation (the accuracy suite's hot path) -----------------
    def prepare_data(self, model: TwinModel, images: np.ndarray, labels: np.ndarray):
        """Prepared float32 NHWC images and labels as tensors on this device, made once per
        run (the NumPy labels are kept for scoring)."""
        with tf.device(self.tf_device):
            return (tf.constant(images.astype(model.dtype, copy=False)), tf.constant(labels),
                    labels)

    def fit_epoch(self, model: TwinModel, optimizer, data, batch_size: int, order: np.ndarray) -> float:
        """One epoch in the given sample order through Keras's own fit (the reference
        program's training loop), last batch partial; returns the mean of the batch losses.

        The epoch's input is a dataset of index batches gathered from the resident tensors:
        handing fit the permuted NumPy arrays instead copied the whole training set into a
        new tensor every epoch (11.6-12.5 s per epoch against 7.2-8.1 s this way, measured
        on the CPU box)."""
        x, y, _ = data
        if getattr(model.net, "optimizer", None) is not optimizer:
            model.net.compile(optimizer=optimizer, loss=_LOSSES[model.dtype])
        batches = (tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
                   .map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
                   .prefetch(tf.data.AUTOTUNE))
        with tf.device(self.tf_device):
            history = model.net.fit(batches, epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][0])

    def evaluate(self, model: TwinModel, data, batch_size: int = 1000) -> float:
        """Top-1 accuracy over prepared data, in large batches."""
        x, _, labels = data
        if model.compiled_predict is None:
            model.compiled_predict = tf.function(lambda t: tf.argmax(model.net(t, training=False), 1))
        correct = 0
        with tf.device(self.tf_device):
            for start in range(0, len(x), batch_size):
                pred = model.compiled_predict(x[start:start + batch_size])
                correct += int(np.sum(pred.numpy() == labels[start:start + batch_size]))
        return correct / len(x)

    @contextlib.contextmanager
    def recipe_settings(self, recipe):
        """Nothing to change for TensorFlow (Keras's own fit loop is the fast path here);
        yields what the result row records: the intra-op thread count."""
        yield {"threads": tf.config.threading.get_intra_op_parallelism_threads()}
