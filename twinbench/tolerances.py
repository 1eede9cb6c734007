"""Named tolerances for the correctness suites, each with the reason for its value.

A comparison passes when, for every element,

    |actual - expected| <= atol + rtol * |expected| + scaled * max|expected|

(twinbench/agreement.py). `scaled` is the natural unit for rounding in sums: a float32 dot
product of length K carries an error of about sqrt(K) * u times the size of its terms
(random-walk accumulation; K * u in the worst case), u = 2^-24 the unit roundoff. The size
of the terms is the size of the tensor, not of each element: an element that is small
because its terms cancel keeps the error of the large terms, so an elementwise relative
bound would be wrong for it.

Where a value below was measured, the measurement is quoted (CPU box, docs/methodology.md#tolerances),
so that the margin is visible; no value was fitted to a measurement.

GPU values assume the precision policy both adapters pin: TF32 off (TensorFlow turns it on by
default on Ampere and later, which would leave 10 mantissa bits, about 1000x coarser). The two
frameworks still let cuDNN choose convolution algorithms independently (implicit GEMM,
Winograd, FFT, split-K reductions in atomics): Winograd and FFT transforms lose up to an order
of magnitude more than direct summation, so GPU bounds are 10x the CPU ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twinbench.choices import lookup

EPS32 = 2.0 ** -23     # float32 machine epsilon (spacing of floats at 1.0)
U32 = EPS32 / 2        # float32 unit roundoff: the relative error of one rounding
EPS64 = 2.0 ** -52


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 0.0      # times |expected|, elementwise
    atol: float = 0.0      # absolute
    scaled: float = 0.0    # times max|expected| over the whole tensor

    def __str__(self) -> str:
        parts = [f"{k}={v:.3g}" for k, v in (("rtol", self.rtol), ("atol", self.atol),
                                              ("scaled", self.scaled)) if v]
        return ", ".join(parts) or "bitwise equal"


# Moving weights between layouts is transposes and permutations only: not one rounding.
EXACT = Tolerance()

# ---------------------------------------------------------------------------------------------
# Finite differences in float64 (suites/test_gradients.py)
# ---------------------------------------------------------------------------------------------
# Central difference (L(w+h) - L(w-h)) / 2h. Truncation error h^2/6 * L''' ~ 1e-13 for the
# smooth pieces; rounding error about EPS64 * |L| / h = 2.2e-16 * 2.5 / 1e-6 = 5.5e-10 (a
# few ulps of L, each divided by h). h = 1e-6 is small enough that a perturbation rarely
# crosses a ReLU kink or flips a max-pool winner for random float64 inputs.
FD_STEP = 1e-6
# atol: 20x the rounding term above (the loss itself is a sum whose last ulps move too);
# rtol: far above the truncation term, far below any real gradient bug (a wrong factor,
# a dropped term, a float32 loss inside a float64 model). Measured: max |error| 4e-10.
FD_GRADIENT_CPU = Tolerance(rtol=1e-5, atol=1e-8)
# float64 on a GPU: cuDNN's float64 kernels are direct (no Winograd/FFT) and the error is
# dominated by the difference step, not the device: the same bound.
FD_GRADIENT_GPU = FD_GRADIENT_CPU
FD_GRADIENT = {"cpu": FD_GRADIENT_CPU, "gpu": FD_GRADIENT_GPU}
# A probe crosses no ReLU kink when its forward and backward one-sided slopes agree: on a
# smooth piece they differ by h |L''| (measured at most 2.3e-5: resnet8's fc/kernel in
# inference mode, where the untrained moving statistics leave features large, |L''| ~ 23);
# a kink crossed within +-h shows as the jump in slope (measured 4.0e-4 for the torch resnet8
# twin's crossing on seed 0 in training mode; docs/methodology.md#resnet8). The threshold
# sits between the two.
FD_SLOPE_JUMP = 1e-4

# ---------------------------------------------------------------------------------------------
# float32 parity between the twins (suites/test_parity.py, suites/test_optimizer_steps.py)
# ---------------------------------------------------------------------------------------------
# Accumulation lengths K, for the longer twin (keras_cnn; lenet's are shorter):
#   forward: one dot product per layer, K = 27, 288, 576, 1024, 64  -> sum sqrt(K) = 86
#   backward: the data gradients run the same layers transposed      -> about 86 again
#   weight gradients: a sum over batch x output positions, 16 x 30 x 30 = 14,400 for conv1
#     at the suites' batch of 16                                     -> sqrt(K) = 120
# Each framework rounds independently (sqrt 2 for the difference of two) and a tensor's
# worst element sits about 3 standard deviations out.
_FORWARD_SQRT_K = sum(math.sqrt(k) for k in (27, 288, 576, 1024, 64))       # 86
_BACKWARD_SQRT_K = _FORWARD_SQRT_K + math.sqrt(16 * 30 * 30)                  # 206
_SPREAD = 3 * math.sqrt(2)

# Logits: 3 * sqrt(2) * 86 * u = 2.2e-5 of max|logits|. Measured 8.0e-7 (keras_cnn), 3.8e-7
# (lenet): oneDNN and Eigen sum in blocks, which grows slower than a plain running sum.
LOGITS_CPU = Tolerance(scaled=_SPREAD * _FORWARD_SQRT_K * U32)
# Loss: mean cross-entropy moves by at most 2 max|d logits|, and for the untrained or
# briefly trained nets of these suites max|logits| < 1 < L (about ln 10 = 2.3), so the
# logits' bound holds relative to the loss. Measured 1.0e-7.
LOSS_CPU = Tolerance(rtol=LOGITS_CPU.scaled)
# Weight gradients: forward, backward and the weight-gradient reduction, 86 + 206 = 292:
# 3 * sqrt(2) * 292 * u = 7.4e-5 of each tensor's max|gradient|. Measured at most 9.3e-7.
GRADIENTS_CPU = Tolerance(scaled=_SPREAD * (_FORWARD_SQRT_K + _BACKWARD_SQRT_K) * U32)

# One optimizer step writes w + dw, rounded once in each framework: the twins' weights may
# drift apart by 2u|w| = EPS32 * |w| per step whatever the gradients were (measured: SGD's
# 10-step differences are 1-2 ulps of |w|, 7.5e-9 to 1.5e-8).
WEIGHT_ROUNDING_PER_STEP = EPS32

# Adam divides by sqrt(v) + eps_hat, eps_hat = eps / sqrt(1 - beta_2^t) = 3.2e-6 at step 1
# and 1.0e-6 at step 10. Near g = 0 the step's sensitivity to the gradient is lr / eps_hat,
# so gradient rounding differences of ~1e-7 (the measured float32 gradient parity) move a
# coordinate's step by up to 1e-7 / 1e-6 = 10% of a step (lr), and no bound derived from the
# gradients' own tolerance is tighter than "about one step". The comparison is therefore in
# units of the step: the twins may differ by this fraction of lr per step taken.
# Measured: 0.2% of a step after 1 step; after 10, 0.07% on the suites' batches and 1.6% on
# another seed's (keras_cnn conv3). The wrong epsilon (torch.optim.Adam's eps=1e-8 on
# sqrt(v_hat)) moves steps by 50-90% of lr: 5-9x this bound.
ADAM_STEP_FRACTION_CPU = 0.1
ADAM_STEP_FRACTION_GPU = 0.25   # 10x looser gradients, capped well below the 40-90% of a fault


@dataclass(frozen=True)
class Parity:
    """float32 parity bounds for one device."""
    logits: Tolerance
    loss: Tolerance
    gradients: Tolerance
    adam_step_fraction: float
    weight_rounding_per_step: float = WEIGHT_ROUNDING_PER_STEP

    def sgd_displacement(self) -> Tolerance:
        """SGD's displacement w_n - w_0 is lr times (momentum-weighted) sums of gradients:
        it inherits the gradients' bound, relative to the displacement's own size."""
        return Tolerance(scaled=self.gradients.scaled)

    def loss_drift_per_step(self) -> float:
        """Each step's rounding moves the next loss by about one forward pass's rounding."""
        return self.loss.rtol


PARITY = {
    "cpu": Parity(logits=LOGITS_CPU, loss=LOSS_CPU, gradients=GRADIENTS_CPU,
                  adam_step_fraction=ADAM_STEP_FRACTION_CPU),
    "gpu": Parity(logits=Tolerance(scaled=10 * LOGITS_CPU.scaled),
                  loss=Tolerance(rtol=10 * LOSS_CPU.rtol),
                  gradients=Tolerance(scaled=10 * GRADIENTS_CPU.scaled),
                  adam_step_fraction=ADAM_STEP_FRACTION_GPU),
}


def parity(device: str) -> Parity:
    return lookup(PARITY, device, "device for parity tolerances")


# ---------------------------------------------------------------------------------------------
# BatchNorm in training mode (Architecture.batchnorm; docs/methodology.md#resnet8)
# ---------------------------------------------------------------------------------------------
# With BatchNorm on batch statistics, the float32 gradients of each framework are far from its
# own float64 gradients, so the BN-free bounds above (derived from accumulation lengths) do not
# apply. Measured on suites/test_parity.py's batch (resnet8, seed 0, CPU), each framework's
# float32 gradient error against its own float64 gradient, as a fraction of max|g64|:
#   TensorFlow up to 1.15e-2 (s2_conv1/kernel; 5.0e-3 s2_bn1/beta, 1.4e-3 s1_conv1/kernel):
#     Keras's BatchNorm takes the batch variance as E[x^2] - E[x]^2 in float32, which cancels
#     where a channel's mean is large against its spread;
#   torch at most 4.9e-6 (conv1/kernel).
# The float64 twins agree to 4.0e-11 of max|g64| (gradients) and 3.4e-10 (loss): the twins
# compute the same function, and the float32 differences are the frameworks' own rounding.
# So the policy (used only where an architecture has BatchNorm, in training mode) is:
# 1. the float64 twins agree within FLOAT64_TWINS: Keras computes the L2 penalty with its
#    coefficient in float32 even in a float64 model (1e-4 -> 9.99999975e-5, 2.5e-8 relative,
#    below U32), which moves the loss by at most U32 of itself and a kernel's gradient by
#    U32 * 2 * l2 * |W| (measured: loss 3.4e-10 relative, gradients 4.0e-11 of max|g|); after
#    SGD steps with momentum, plus float64_momentum_rounding (the same float32 cast, of the
#    momentum coefficient, on Keras's TensorFlow side only);
# 2. per tensor, the float32 twins differ by at most BN_SAFETY x (err_tf + err_torch), each
#    framework's float32 error against its own float64 result on the same weights and batch
#    (the difference of two independent errors is at most their sum; the factor covers the
#    float64 references' own rounding, and keeps the bound per tensor, where one framework's
#    cancellation sits);
# 3. tensors whose true gradient is ~0 (a conv bias that BatchNorm follows: its gradient is
#    zero in exact arithmetic, 1e-17..1e-15 in float64, the rounding of a sum in float32) get
#    an absolute floor: the rounding of the longest weight-gradient reduction in the net,
#    ZERO_GRADIENT_TERMS = 16 x 32 x 32 (batch x full-size map), _SPREAD * sqrt(K) * u times
#    the network's largest gradient (the terms' size). float32: 3.2e-5 x max|g| (measured
#    noise at most 5e-7 x max|g|: conv1/bias, s1_conv2/bias); float64: 1.5e-13 x max|g|
#    (measured 1.8e-15).
FLOAT64_TWINS = Tolerance(scaled=U32)
BN_SAFETY = 2.0
U64 = EPS64 / 2
ZERO_GRADIENT_TERMS = 16 * 32 * 32


def zero_gradient_floor(unit_roundoff: float, scale: float) -> float:
    """The absolute rounding of a weight gradient whose terms cancel exactly (policy 3)."""
    return _SPREAD * math.sqrt(ZERO_GRADIENT_TERMS) * unit_roundoff * scale


def batchnorm_float32_floors(tf32, tf64, torch32, torch64, scale: float) -> dict[str, float]:
    """Per-tensor absolute bounds for |torch32 - tf32| (policy 2 and 3): BN_SAFETY times the
    sum of each framework's float32 error against its own float64 result, plus the zero-
    gradient floor for the network's `scale` (its largest float64 gradient, or displacement)."""
    floor = zero_gradient_floor(U32, scale)
    return {k: BN_SAFETY * (float(np.abs(np.float64(tf32[k]) - tf64[k]).max(initial=0.0))
                            + float(np.abs(np.float64(torch32[k]) - torch64[k]).max(initial=0.0)))
               + floor for k in tf64}


def float64_step_floor(recipe, steps: int, scale: float) -> float:
    """The float64 twins' allowance for a displacement after `steps` optimizer steps.
    SGD moves a weight by lr x its gradient: the zero-gradient floor of the displacement's
    size `scale`. Adam adds a step-size term: one side evaluates the step with beta_2 rounded
    to float32 even in a float64 model (relative error up to U32 / (1 - beta_2) in 1 - beta_2,
    half of it in the step's sqrt(1 - beta_2^t)), so the float64 twins' steps may differ by
    U32 / (1 - beta_2) of lr each (measured: 6.6e-6 of a step, 1.1x the U32-scaled bound
    alone; torch's default-Adam mutant moves steps by 50-90%). A gradient BatchNorm cancels
    (~1e-15 in float64) moves Adam's step by ~1e-15 / eps_hat of lr: negligible. Once the
    weights differ at all, Adam's later steps inherit ADAM_STEP_FRACTION_CPU's argument
    (coordinates near g = 0 are sensitive at lr / eps_hat, in any precision): each step after
    the first adds that fraction of lr (measured after 10 steps: 5.7e-5, 0.6% of 10 lr)."""
    floor = zero_gradient_floor(U64, scale)
    if recipe.optimizer == "adam":
        floor += recipe.lr * (U32 / (1 - recipe.beta_2) + (steps - 1) * ADAM_STEP_FRACTION_CPU)
    return floor


def float64_momentum_rounding(recipe, steps: int) -> float:
    """The float64 runs' allowance for SGD's momentum coefficient after `steps` steps, as a
    fraction of a tensor's largest displacement (a `scaled` term, added to FLOAT64_TWINS).

    Keras on TensorFlow casts the Python-float coefficient through float32 even for float64
    variables (as it does the L2 coefficient and Adam's betas); Keras on torch or JAX and the
    torch twin use it as given. mu and fl32(mu) differ by d = |mu - fl32(mu)| (2.4e-8 at 0.9).
    After n steps a displacement is lr x sum_i g_i S(n - i), S(r) = 1 + mu + ... + mu^r, and d
    moves gradient i's share by d x S'(n - i): an element whose gradients keep their sign moves
    by at most d x max over r < n of S'(r) / S(r) of its displacement (the oldest gradient's
    share is the most sensitive): 4.05 d = 9.7e-8 after 10 steps at 0.9, nothing after one
    (the velocity starts at zero). Measured (resnet8, lenet_sgd's SGD, 10 steps): the
    Keras-backend arms' float64 displacements up to 7.5e-8 of each tensor's from TensorFlow's
    (1.26x U32 alone; the arms and TensorFlow share the learning rate, a float32 variable in
    Keras); the torch twin's, whose learning rate is exact too, 4.7e-8 after one step (the
    learning rate's rounding) and 3.2e-8 after ten, where the two roundings (lr up, mu down)
    partly cancel. Leaving the momentum out changes ten steps' displacement several-fold."""
    if recipe.optimizer != "sgd" or not recipe.momentum:
        return 0.0
    mu = recipe.momentum
    d = abs(mu - float(np.float32(mu)))

    def share(r: int) -> float:   # S'(r) / S(r)
        return (sum(j * mu ** (j - 1) for j in range(1, r + 1))
                / sum(mu ** j for j in range(r + 1)))
    return d * max(share(r) for r in range(steps))
