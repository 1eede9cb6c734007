"""ResNet-8: the conventions where TensorFlow and torch differ, each pinned by a comparison that
passes for the twin and fails for a twin built the wrong way (models/resnet8.py says how the
torch twin reconciles each one; docs/methodology.md#resnet8).

The wrong twins are the torch twin with one keyword of models.resnet8.torch_model() changed
(or, for L2, the architecture without its L2 terms on the torch side); the TensorFlow twin,
Keras's own layers at their defaults, is the reference throughout.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

import models
from models import resnet8
from models.spec import BN_STATISTICS
from twinbench import imports, tolerances
from twinbench.agreement import compare, report
from twinbench.recipes import RECIPES
from twinbench.tolerances import Tolerance, parity

ARCH = models.get("resnet8")
RECIPE = RECIPES["resnet8_short"]     # its input scaling
# The k-step comparisons train with SGD (lenet_sgd's lr 1e-3, momentum 0.9), not Adam: with
# BatchNorm in training mode the twins' weights drift apart far faster than in the BN-free
# twins (measured after 10 SGD steps at lr 1e-3: up to 8e-4 of the kernels' displacement;
# 6-10% at lr 0.1), and Adam normalizes the zero-in-theory gradients of the conv biases that
# BatchNorm cancels. The running statistics are dominated by the batch statistics, which
# this drift barely moves (measured 2.4e-6 of their displacement), so they keep a tight bound.
SGD = dataclasses.replace(RECIPES["lenet_sgd"], arch="resnet8")
BATCH = 16      # the parity suites' batch (twinbench/tolerances.py's accumulation lengths)
STEPS = 10      # training steps before the running statistics and eval logits are compared
TRAINABLE = 78_186          # Keras's summary of the published model: trainable parameters
MOVING_STATISTICS = 480     # and BatchNorm moving means and variances (2 x 240 channels)


def variant(**kwargs):
    """The architecture with a torch twin built by torch_model(**kwargs)."""
    return dataclasses.replace(ARCH, torch_model=functools.partial(resnet8.torch_model, **kwargs))


WITHOUT_L2 = dataclasses.replace(
    ARCH, layers=tuple(dataclasses.replace(layer, l2=0.0) for layer in ARCH.layers))

# name -> (torch-side architecture, what the parity checks must report)
MUTANTS = {
    "keras_momentum_literally": (variant(bn_momentum=resnet8.KERAS_MOMENTUM), "moving_"),
    "torch_default_momentum": (variant(bn_momentum=0.1), "moving_"),
    "torch_default_epsilon": (variant(bn_epsilon=1e-5), "max abs error"),
    "unbiased_running_variance": (variant(running_var="unbiased"), "moving_variance"),
    "symmetric_stride2_padding": (variant(stride2_padding="symmetric"), "max abs error"),
    "softmax_into_from_logits_loss": (variant(output="softmax"), "max abs error"),
    "l2_not_in_torch_loss": (WITHOUT_L2, "loss: max abs error"),
}


def batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(RECIPE.prepare(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)),
             rng.integers(0, 10, BATCH)) for _ in range(n)]


def pair(twins, torch_arch=ARCH):
    """(tf model, torch model) with the tf twin's initial weights in both."""
    tf, torch = twins
    tf_model, torch_model = tf.build(ARCH, seed=0), torch.build(torch_arch, seed=1)
    torch.set_weights(torch_model, tf.get_weights(tf_model))
    return tf_model, torch_model


def trained(twins, torch_arch=ARCH, steps: int = STEPS):
    """Both twins after `steps` SGD steps (see SGD above) on the same batches:
    (initial weights, tf weights, torch weights, tf eval logits, torch eval logits)."""
    tf, torch = twins
    tf_model, torch_model = pair(twins, torch_arch)
    initial = {k: v.copy() for k, v in tf.get_weights(tf_model).items()}
    data = batches(steps)
    for fw, model in ((tf, tf_model), (torch, torch_model)):
        optimizer = fw.make_optimizer(model, SGD)
        for images, labels in data:
            fw.train_step(model, optimizer, images, labels)
    probe = batches(1, seed=1)[0][0]
    return (initial, tf.get_weights(tf_model), torch.get_weights(torch_model),
            tf.forward(tf_model, probe), torch.forward(torch_model, probe))


def statistics(weights, initial):
    """The moving statistics' displacement from their initial values, in float64."""
    return {k: weights[k].astype(np.float64) - initial[k] for k in weights
            if k.rsplit("/", 1)[-1] in BN_STATISTICS}


def check_statistics(device, initial, actual, expected, what):
    """Running statistics after k steps: each step folds 1% of a batch statistic in; the
    statistics are sums over batch x positions, like the weight gradients, so their rounding
    bound is the gradients' (twinbench/tolerances.py), relative to each displacement's size.
    Measured 2.4e-6 (30x inside); torch's unbiased variance moves stack 3's by ~1e-3."""
    tol = Tolerance(scaled=parity(device).gradients.scaled)
    return compare(statistics(actual, initial), statistics(expected, initial), tol, what=what)


def check_eval_logits(device, actual, expected, what):
    """Inference-mode logits after STEPS steps: the forward bound plus one forward pass's
    worth of drift per step, as suites/test_optimizer_steps.py's loss trajectory allows."""
    tol = parity(device)
    return compare({"logits": actual}, {"logits": expected},
                   Tolerance(scaled=tol.logits.scaled + STEPS * tol.loss_drift_per_step()),
                   what=what)


@pytest.fixture(scope="module")
def twin_run(twins):
    return trained(twins)


# -- what the twin must be ------------------------------------------------------------------------
def test_parameter_split(twins):
    """78,186 trainable values and 480 moving statistics in both frameworks; torch's count is
    its parameters plus the running mean/variance buffers, and the twin's BatchNorm keeps no
    num_batches_tracked counter (Keras has none; torch reads it only when momentum=None)."""
    tf, torch = twins
    keras_net = tf.build(ARCH).net
    torch_net = torch.build(ARCH).net
    assert sum(int(np.prod(w.shape)) for w in keras_net.trainable_weights) == TRAINABLE
    assert sum(int(np.prod(w.shape)) for w in keras_net.non_trainable_weights) == MOVING_STATISTICS
    assert sum(p.numel() for p in torch_net.parameters()) == TRAINABLE
    buffers = dict(torch_net.named_buffers())
    assert sum(b.numel() for b in buffers.values()) == MOVING_STATISTICS
    assert not [n for n in torch_net.state_dict() if n.endswith("num_batches_tracked")]
    assert ARCH.parameters == TRAINABLE + MOVING_STATISTICS


def test_keras_conventions_are_the_defaults(twins):
    """The reference side really is Keras at its defaults (momentum 0.99, epsilon 1e-3,
    'same' padding, L2 1e-4 on every convolution kernel and nothing else): the published model
    writes none of them but the padding and L2."""
    tf, _ = twins
    net = tf.build(ARCH).net
    for layer in ARCH.layers:
        k_layer = net.get_layer(layer.name)
        if layer.kind == "bn":
            assert (k_layer.momentum, k_layer.epsilon) == (0.99, 1e-3), layer.name
        elif layer.kind == "conv":
            assert k_layer.padding == "same" and k_layer.kernel_regularizer.l2 == pytest.approx(1e-4)
            assert layer.l2 == resnet8.L2
        else:
            assert k_layer.kernel_regularizer is None and layer.l2 == 0.0


def test_running_statistics_after_steps(twin_run, device, record_property):
    initial, tf_w, torch_w, _, _ = twin_run
    errors = check_statistics(device, initial, torch_w, tf_w,
                              what=f"resnet8 moving statistics after {STEPS} steps, torch vs tf")
    report(errors, f"resnet8 {device} running statistics", record_property)


def test_eval_logits_after_steps(twin_run, device, record_property):
    _, _, _, tf_logits, torch_logits = twin_run
    errors = check_eval_logits(device, torch_logits, tf_logits,
                               what=f"resnet8 inference-mode logits after {STEPS} steps")
    report(errors, f"resnet8 {device} eval logits after steps", record_property)


def test_published_head_is_the_from_logits_loss(twins):
    """Softmax output + Keras's categorical cross-entropy on probabilities (which clips them to
    [1e-7, 1 - 1e-7]) is the from-logits cross-entropy the twins use, for unsaturated outputs."""
    tf, _ = twins
    model = tf.build(ARCH)
    images, labels = batches(1)[0]
    logits = tf.forward(model, images).astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    from_logits = np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(BATCH), labels])
    probabilities = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
    published = np.mean(-np.log(np.clip(probabilities, 1e-7, 1 - 1e-7))[np.arange(BATCH), labels])
    assert abs(published - from_logits) <= parity(tf.device).loss.rtol * from_logits


def test_l2_as_coupled_weight_decay(twins):
    """Keras's l2(1e-4) in the loss is, in a torch optimizer, a coupled weight decay of 2e-4 on
    the convolution kernels only: one SGD step gives the weights of Keras's SGD with the
    regularizer in its loss. Half the decay, or the decay on every parameter (BatchNorm's
    gamma and beta, biases, the dense layer), does not.

    In float64: the decay's effect on one step is lr * 2e-4 * |w|, about 3e-8 on these
    kernels, below the float32 noise of BatchNorm's training-mode gradients (up to 1e-2 of
    a kernel's gradient in Keras, twinbench/tolerances.py), while the float64 twins agree to
    FLOAT64_TWINS (docs/methodology.md#resnet8)."""
    tf, torch = twins
    recipe = SGD
    data = [(x.astype(np.float64), y) for x, y in batches(1)]
    tf_model, _ = pair(twins)
    initial = {k: v.astype(np.float64) for k, v in tf.get_weights(tf_model).items()}
    tf_model = tf.build(ARCH, seed=0, dtype="float64")
    tf.set_weights(tf_model, initial)
    optimizer = tf.make_optimizer(tf_model, recipe)
    for images, labels in data:
        tf.train_step(tf_model, optimizer, images, labels)
    expected = tf.get_weights(tf_model)
    conv_kernels = {f"{layer.name}.weight" for layer in ARCH.layers if layer.kind == "conv"}

    def torch_weights(decay: float, everywhere: bool = False):
        model = torch.build(WITHOUT_L2, seed=1, dtype="float64")   # no L2 term in the loss
        torch.set_weights(model, initial)
        named = dict(model.net.named_parameters())
        decayed = [p for n, p in named.items() if everywhere or n in conv_kernels]
        rest = [p for n, p in named.items() if not (everywhere or n in conv_kernels)]
        optimizer = imports.torch().optim.SGD(
            [{"params": decayed, "weight_decay": decay}, {"params": rest, "weight_decay": 0.0}],
            lr=recipe.lr, momentum=recipe.momentum)
        for images, labels in data:
            torch.train_step(model, optimizer, images, labels)
        return torch.get_weights(model)

    displacement = {k: expected[k] - initial[k] for k in expected}
    scale = max(np.abs(d).max() for d in displacement.values())
    # A conv bias before BatchNorm moves by lr x its ~0 gradient: the zero-gradient floor of
    # the displacement's scale; every weight is rounded once by the step (EPS64 |w|).
    floor = {k: tolerances.zero_gradient_floor(tolerances.U64, scale)
             + tolerances.EPS64 * np.abs(expected[k]).max() for k in expected}

    def check(actual, what):
        return compare({k: actual[k] - initial[k] for k in expected}, displacement,
                       tolerances.FLOAT64_TWINS, what=what, floor=floor)

    check(torch_weights(2 * resnet8.L2), "coupled weight decay 2e-4 on conv kernels vs Keras l2(1e-4)")
    with pytest.raises(AssertionError, match="kernel: max abs error"):
        check(torch_weights(resnet8.L2), "weight decay 1e-4 (the factor 2 forgotten)")
    with pytest.raises(AssertionError, match="(gamma|beta|fc/kernel|bias): max abs error"):
        check(torch_weights(2 * resnet8.L2, everywhere=True), "weight decay on every parameter")


# -- the checks catch each wrong twin -------------------------------------------------------------
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_parity_catches_wrong_convention(twins, device, mutant):
    """Each wrong twin fails one of the parity checks the twin passes: logits (inference mode)
    and loss (training mode) on one batch, or the running statistics and eval logits after
    STEPS steps."""
    tf, torch = twins
    torch_arch, message = MUTANTS[mutant]
    tol = parity(device)
    images, labels = batches(1)[0]
    tf_model, torch_model = pair(twins, torch_arch)
    failures = []

    # Logits and loss, not gradients: a conv bias that BatchNorm follows has a gradient of zero
    # in exact arithmetic, and its float32 noise differs between frameworks at 100% of itself.
    checks = [
        lambda: compare({"logits": torch.forward(torch_model, images)},
                        {"logits": tf.forward(tf_model, images)}, tol.logits, what="logits"),
        lambda: compare({"loss": np.array([torch.loss(torch_model, images, labels)])},
                        {"loss": np.array([tf.loss(tf_model, images, labels)])}, tol.loss,
                        what="training-mode loss"),
    ]
    for check in checks:
        try:
            check()
        except AssertionError as error:
            failures.append(str(error))
    if not failures:
        initial, tf_w, torch_w, tf_logits, torch_logits = trained(twins, torch_arch)
        for check in (lambda: check_statistics(device, initial, torch_w, tf_w, "statistics"),
                      lambda: check_eval_logits(device, torch_logits, tf_logits, "eval logits")):
            try:
                check()
            except AssertionError as error:
                failures.append(str(error))
    assert failures, f"{mutant}: the parity checks did not catch this wrong twin"
    assert any(message in f for f in failures), (
        f"{mutant}: caught, but not where expected ({message!r}): {failures}")
