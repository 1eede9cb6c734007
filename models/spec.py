"""What the suites need to know about an architecture, independent of framework.

The canonical weight layout, shared by both frameworks and by everything that moves weights
between them, is Keras's: conv kernels HWIO, dense kernels (in, out), and the first dense
layer's input rows in Keras's flatten order (H, W, C). Torch's twin converts at its boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Layer:
    name: str       # the attribute name in torch and the layer name in Keras
    kind: str       # "conv" or "dense"
    shape: tuple    # canonical kernel shape: conv (kh, kw, in, out); dense (in, out)


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

    def canonical_shapes(self) -> dict[str, tuple[int, ...]]:
        """Weight name -> canonical shape, in layer order: '<layer>/kernel', '<layer>/bias'."""
        shapes = {}
        for layer in self.layers:
            shapes[f"{layer.name}/kernel"] = layer.shape
            shapes[f"{layer.name}/bias"] = (layer.shape[-1],)
        return shapes


def conv_flops(h_out: int, w_out: int, kh: int, kw: int, cin: int, cout: int) -> float:
    return 2.0 * h_out * w_out * kh * kw * cin * cout


def dense_flops(n_in: int, n_out: int) -> float:
    return 2.0 * n_in * n_out
