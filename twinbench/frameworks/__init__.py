"""Framework adapters: one class per framework, the same methods in the same order.

NumPy is the boundary: images go in as NHWC arrays (float32 after a recipe's `prepare`),
logits, losses, weights and gradients come out as NumPy in the canonical layout
(models/layout.py). Suites written against this interface never import a framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twinbench import imports
from twinbench.imports import FRAMEWORKS

DEVICES = ("cpu", "gpu")
IMAGE_SHAPE = (32, 32, 3)


@dataclass
class TwinModel:
    """A built network and what the adapter needs to know about it."""
    arch: Any          # models.spec.Architecture
    net: Any           # torch.nn.Module or keras.Model
    dtype: str = "float32"
    compiled_step: Any = None      # per-model cache of the framework's compiled training step
    compiled_predict: Any = None   # likewise for evaluation


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


def get_framework(name: str, device: str = "cpu"):
    """The adapter for `name` on `device`; raises with the reason when it cannot run here."""
    reason = unavailable_reason(name, device)
    if reason:
        raise RuntimeError(reason)
    if name == "torch":
        from twinbench.frameworks.torch_backend import TorchFramework
        return TorchFramework(device)
    from twinbench.frameworks.tf_backend import TensorFlowFramework
    return TensorFlowFramework(device)
