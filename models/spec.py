"""What the suites need to know about an architecture, independent of framework.

The canonical weight layout, shared by both frameworks and by everything that moves weights
between them, is Keras's: conv kernels HWIO, dense kernels (in, out), and the first dense
layer's input rows in Keras's flatten order (H, W, C); a BatchNorm layer is four vectors named
as Keras names them (gamma, beta, moving_mean, moving_variance). Torch's twin converts at its
boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# A BatchNorm layer's canonical weights (Keras's names) -> torch's state_dict names. The moving
# statistics are weights here (they move between frameworks and count in Keras's total),
# not trainable ones.
BN_WEIGHTS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}
BN_STATISTICS = ("moving_mean", "moving_variance")


@dataclass(frozen=True)
class Layer:
    name: str       # the attribute name in torch and the layer name in Keras
    kind: str       # "conv", "dense" or "bn"
    shape: tuple    # canonical kernel shape: conv (kh, kw, in, out); dense (in, out); bn (channels,)
    l2: float = 0.0  # L2 coefficient on the kernel, a term of the loss in both frameworks


@dataclass(frozen=True)
class Architecture:
    name: str
    layers: tuple[Layer, ...]
    flatten_chw: tuple[int, int, int]   # feature map entering Flatten, as torch sees it (C, H, W)
    first_dense: str                    # the layer whose input rows follow the flatten order
    parameters: int                     # the reference programs' count, checked in both frameworks
    forward_flops: float                # per image, multiply-add counted as 2 (docs/methodology.md#throughput-protocol)
    torch_model: Callable               # () -> torch.nn.Module
    keras_model: Callable               # () -> keras.Model
    feature_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # (layer, NHWC shape per image) after each stage
    dense_relu: bool = True             # a ReLU follows first_dense (the missing-ReLU mutation needs one)

    @property
    def batchnorm(self) -> bool:
        """Whether training and inference mode compute different functions."""
        return any(layer.kind == "bn" for layer in self.layers)

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weight name -> canonical shape, in layer order: '<layer>/kernel', '<layer>/bias';
        a BatchNorm layer's four vectors under their Keras names (BN_WEIGHTS)."""
        shapes = {}
        for layer in self.layers:
            if layer.kind == "bn":
                shapes.update({f"{layer.name}/{w}": layer.shape for w in BN_WEIGHTS})
                continue
            shapes[f"{layer.name}/kernel"] = layer.shape
            shapes[f"{layer.name}/bias"] = (layer.shape[-1],)
        return shapes


def conv_flops(h_out: int, w_out: int, kh: int, kw: int, cin: int, cout: int) -> float:
    return 2.0 * h_out * w_out * kh * kw * cin * cout


def dense_flops(n_in: int, n_out: int) -> float:
    return 2.0 * n_in * n_out
