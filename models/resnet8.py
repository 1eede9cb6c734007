"""MLPerf Tiny's ResNet-8 (image classification, v0.5/v1.0 benchmark: 16 base filters), in both
frameworks (mlcommons/tiny, benchmark/training/image_classification/keras_model.py).

Conv 3x3 16 + BN + ReLU; stack 1: two Conv 3x3 16 (BN, ReLU between, BN after) + identity, ReLU;
stacks 2 and 3 (32, 64 filters): Conv 3x3 stride 2 + BN + ReLU, Conv 3x3 + BN, + a 1x1 stride-2
"shortcut" convolution of the block input, ReLU; AveragePooling 8x8, Flatten, Dense 10.
All convolutions 'same', he_normal, L2 1e-4 on their kernels. 78,666 values in Keras's count:
78,186 trainable and 480 BatchNorm moving statistics; 24.6 MFLOP forward per image.

Where the frameworks' conventions differ, the torch twin is built to compute Keras's function
(docs/methodology.md#resnet8); each keyword of torch_model() below exists so that the suites
can build the wrong twin and show that the parity checks catch it:
- BatchNorm momentum: Keras weighs the OLD moving value (0.99), torch the NEW batch value:
  torch momentum = 1 - 0.99 = 0.01 (torch's default is 0.1).
- BatchNorm epsilon: Keras's default 1e-3, not torch's 1e-5.
- The variance folded into the running statistics: Keras uses the biased batch variance
  (tf.nn.moments), torch's BatchNorm the unbiased one (n / (n - 1)) and cannot be told
  otherwise. The twin's KerasBatchNorm normalizes with F.batch_norm (the batch's biased
  variance, as both frameworks do) but updates the running statistics itself, under no_grad,
  from torch.var_mean(correction=0), in Keras's arithmetic order (old * 0.99 + new * 0.01).
  It is its own module, not an nn.BatchNorm2d, so it has no num_batches_tracked counter:
  Keras keeps none, and torch reads it only when momentum=None (a cumulative average).
- 'same' padding at stride 2 on an even input: TensorFlow pads (k - s) = 1 row and column,
  all of it at the bottom/right; torch's padding=1 pads all four sides and shifts every
  window by one pixel. The twin pads explicitly (SameConv2d, TensorFlow's rule).
- L2 1e-4 on the convolution kernels is a term of Keras's loss (kernel_regularizer); the
  adapters add the same term, sum(l2 * ||W||^2) over the layers whose Layer.l2 is set, to
  torch's loss. (As a coupled weight decay in a torch optimizer it is 2 * 1e-4, on the
  convolution kernels only: suites/test_resnet8_conventions.py pins that equivalence.)
- The published head is softmax + categorical cross-entropy; the twin ends in logits and the
  adapters use the from-logits loss in both frameworks (the same function, without the
  probability clipping of Keras's categorical cross-entropy on probabilities).
"""
from __future__ import annotations

import math

from models.spec import Architecture, Layer, conv_flops, dense_flops

NAME = "resnet8"
L2 = 1e-4                    # kernel_regularizer=l2(1e-4) on every convolution, as published
KERAS_MOMENTUM = 0.99        # Keras's default: moving = moving * 0.99 + batch * 0.01
TORCH_MOMENTUM = 1 - KERAS_MOMENTUM   # torch's convention: the weight of the new batch value
EPSILON = 1e-3               # Keras's default BatchNormalization epsilon (torch's is 1e-5)
STACKS = ((1, 16, 1), (2, 32, 2), (3, 64, 2))   # (stack, filters, first stride)
# Keras's truncated normal (he_normal) cuts at 2 std and rescales so the variance stays 2/fan_in
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def _stages():
    """(name, kind, kernel, in, out, stride) of every layer with weights, in Keras's order."""
    stages = [("conv1", "conv", 3, 3, 16, 1), ("bn1", "bn", 0, 16, 16, 1)]
    c_in = 16
    for stack, filters, stride in STACKS:
        p = f"s{stack}_"
        stages += [(p + "conv1", "conv", 3, c_in, filters, stride), (p + "bn1", "bn", 0, filters, filters, 1),
                   (p + "conv2", "conv", 3, filters, filters, 1)]
        if stride != 1:
            stages.append((p + "shortcut", "conv", 1, c_in, filters, stride))
        stages.append((p + "bn2", "bn", 0, filters, filters, 1))
        c_in = filters
    return stages


def torch_model(bn_momentum: float = TORCH_MOMENTUM, bn_epsilon: float = EPSILON,
                running_var: str = "biased", stride2_padding: str = "tf",
                output: str = "logits"):
    """The torch twin. The defaults are the twin; the other values build the wrong twins of
    the conventions above: running_var="unbiased" (torch's own BatchNorm update),
    stride2_padding="symmetric" (padding=1), output="softmax" (probabilities fed to the
    from-logits loss)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if running_var not in ("biased", "unbiased") or stride2_padding not in ("tf", "symmetric") \
            or output not in ("logits", "softmax"):
        raise ValueError(f"resnet8: unknown variant running_var={running_var!r}, "
                         f"stride2_padding={stride2_padding!r}, output={output!r}")

    class KerasBatchNorm(nn.Module):
        """BatchNorm2d with Keras's running-statistics update (see the module docstring)."""

        def __init__(self, channels: int):
            super().__init__()
            self.momentum, self.eps = bn_momentum, bn_epsilon
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

        def forward(self, x):
            if self.training:
                if running_var == "unbiased":      # torch's own update (the wrong twin)
                    return F.batch_norm(x, self.running_mean.detach(), self.running_var.detach(),
                                        self.weight, self.bias, True, self.momentum, self.eps)
                with torch.no_grad():
                    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
                    m = self.momentum
                    self.running_mean.copy_(self.running_mean * (1 - m) + mean * m)
                    self.running_var.copy_(self.running_var * (1 - m) + var * m)
                return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            if self.running_mean.requires_grad:
                # native batch_norm cannot differentiate its running statistics (the gradient
                # suites ask for them): tf.nn.batch_normalization's formula instead.
                inv = torch.rsqrt(self.running_var + self.eps) * self.weight
                return x * inv[:, None, None] + (self.bias - self.running_mean * inv)[:, None, None]
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)

    class SameConv2d(nn.Conv2d):
        """Conv2d with TensorFlow's padding='same': total (ceil(n/s) - 1) * s + k - n, the
        odd pixel at the bottom/right."""

        def forward(self, x):
            pads = []
            for n, k, s in ((x.shape[3], self.kernel_size[1], self.stride[1]),
                            (x.shape[2], self.kernel_size[0], self.stride[0])):
                total = max((math.ceil(n / s) - 1) * s + k - n, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(F.pad(x, pads) if any(pads) else x)

    def conv(c_in, c_out, kernel, stride):
        if stride == 1 or stride2_padding == "tf":
            return SameConv2d(c_in, c_out, kernel, stride)
        return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2)

    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            # Children are registered in Keras's layer order (feature_shapes compares them),
            # and forward() calls them in that order.
            for name, kind, kernel, c_in, c_out, stride in _stages():
                module = conv(c_in, c_out, kernel, stride) if kind == "conv" else KerasBatchNorm(c_out)
                self.add_module(name, module)
                if name.endswith("bn1"):
                    self.add_module(name.replace("bn1", "relu1"), nn.ReLU())
                if name.endswith("bn2"):
                    self.add_module(name.replace("bn2", "add"), Add())
                    self.add_module(name.replace("bn2", "relu2"), nn.ReLU())
            self.pool = nn.AvgPool2d(8)
            self.fc = nn.Linear(64, 10)
            _init_like_keras(self)

        def forward(self, x):                      # x: NCHW float32
            x = self.relu1(self.bn1(self.conv1(x)))
            for stack, _, stride in STACKS:
                block = lambda name: getattr(self, f"s{stack}_{name}")   # noqa: E731
                y = block("relu1")(block("bn1")(block("conv1")(x)))
                y = block("conv2")(y)
                shortcut = block("shortcut")(x) if stride != 1 else x
                y = block("bn2")(y)
                x = block("relu2")(block("add")(shortcut, y))
            logits = self.fc(torch.flatten(self.pool(x), 1))   # (64, 1, 1): no flatten order
            return torch.softmax(logits, 1) if output == "softmax" else logits

    def _init_like_keras(net):
        """he_normal kernels (Keras's truncated normal), zero biases: the twin's distribution
        when it trains from its own initial weights."""
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                std = math.sqrt(2.0 / fan_in) / _TRUNCATED_NORMAL_STD
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(module.bias)

    return ResNet8()


def keras_model(dtype: str = "float32"):
    import keras
    from keras import layers

    def conv(filters, kernel, stride, name):
        return layers.Conv2D(filters, kernel, strides=stride, padding="same",
                             kernel_initializer="he_normal",
                             kernel_regularizer=keras.regularizers.L2(L2), name=name, dtype=dtype)

    def bn(name):
        return layers.BatchNormalization(momentum=KERAS_MOMENTUM, epsilon=EPSILON, name=name,
                                         dtype=dtype)

    def relu(name):
        return layers.Activation("relu", name=name, dtype=dtype)

    inputs = keras.Input((32, 32, 3), dtype=dtype)
    x = relu("relu1")(bn("bn1")(conv(16, 3, 1, "conv1")(inputs)))
    for stack, filters, stride in STACKS:
        p = f"s{stack}_"
        y = relu(p + "relu1")(bn(p + "bn1")(conv(filters, 3, stride, p + "conv1")(x)))
        y = conv(filters, 3, 1, p + "conv2")(y)
        # Keras lists layers by graph depth: the shortcut sits between conv2 and bn2
        shortcut = conv(filters, 1, stride, p + "shortcut")(x) if stride != 1 else x
        y = bn(p + "bn2")(y)
        x = relu(p + "relu2")(layers.Add(name=p + "add", dtype=dtype)([shortcut, y]))
    x = layers.AveragePooling2D(8, name="pool", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    outputs = layers.Dense(10, kernel_initializer="he_normal", name="fc", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=NAME)


def _spec_layers():
    out = []
    for name, kind, kernel, c_in, c_out, _ in _stages():
        if kind == "conv":
            out.append(Layer(name, "conv", (kernel, kernel, c_in, c_out), l2=L2))
        else:
            out.append(Layer(name, "bn", (c_out,)))
    return tuple(out) + (Layer("fc", "dense", (64, 10)),)


def _flops_and_shapes():
    flops, shapes, size = 0.0, [], 32
    for name, kind, kernel, c_in, c_out, stride in _stages():
        if kind == "conv":
            out = -(-size // stride)
            flops += conv_flops(out, out, kernel, kernel, c_in, c_out)
            if not name.endswith("shortcut"):
                size = out
        shapes.append((name, (size, size, c_out)))
    return flops + dense_flops(64, 10), shapes


def _feature_shapes():
    """Every stage's NHWC output, in Keras's layer order (the order the torch twin registers)."""
    order = []
    for name, shape in _flops_and_shapes()[1]:
        order.append((name, shape))
        if name.endswith("bn1"):
            order.append((name.replace("bn1", "relu1"), shape))
        if name.endswith("bn2"):
            order += [(name.replace("bn2", "add"), shape), (name.replace("bn2", "relu2"), shape)]
    return tuple(order) + (("pool", (1, 1, 64)), ("fc", (10,)))


SPEC = Architecture(
    name=NAME,
    layers=_spec_layers(),
    flatten_chw=(64, 1, 1),
    first_dense="fc",
    parameters=78_666,
    forward_flops=_flops_and_shapes()[0],
    torch_model=torch_model,
    keras_model=keras_model,
    feature_shapes=_feature_shapes(),
    dense_relu=False,
)
