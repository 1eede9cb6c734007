"""The one place that imports the frameworks.

Importing TensorFlow before torch, or before torchvision, crashes the process with a
segmentation fault (docs/methodology.md#import-order, checked with the pinned versions). Every entry point
therefore goes through `preload()` first, and the TensorFlow side through `tensorflow()`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

FRAMEWORKS = ("tf", "torch")  # the ids used by options, fixtures and result rows
DISPLAY_NAMES = {"tf": "TensorFlow", "torch": "PyTorch"}

# Keras 3 picks its backend from this variable (or ~/.keras/keras.json); the TF side is meant.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ start-up chatter hides real messages; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def installed(framework: str) -> bool:
    """Whether a framework's packages are installed, without importing them."""
    if framework == "torch":
        return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))
    if framework == "tf":
        return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras"))
    raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")


def torch_blocked_reason() -> str | None:
    """Why torch must not be imported in this process, or None when it is safe.

    Once TensorFlow is loaded without torch, importing torch (or torchvision) segfaults,
    so torch work has to move to a separate process rather than crash this one.
    """
    if "tensorflow" in sys.modules and "torch" not in sys.modules:
        return ("TensorFlow was imported before torch in this process; importing torch now "
                "would crash it (segfault). Run the torch side in a separate process "
                "(e.g. pytest --framework torch) or import torch first.")
    if "tensorflow" in sys.modules and "torchvision" not in sys.modules and installed("torch"):
        return ("TensorFlow was imported before torchvision in this process; importing "
                "torchvision now would crash it (segfault). Run the torch side in a separate "
                "process (e.g. pytest --framework torch) or import torch and torchvision first.")
    return None


def preload() -> None:
    """Import torch and torchvision (when installed) before anything imports TensorFlow."""
    if installed("torch") and torch_blocked_reason() is None:
        import torch  # noqa: F401  (order matters: see module docstring)
        import torchvision  # noqa: F401


def torch():
    """The torch module, refusing (rather than segfaulting) when TensorFlow came first."""
    reason = torch_blocked_reason()
    if reason:
        raise RuntimeError(reason)
    import torch as _torch
    import torchvision  # noqa: F401
    return _torch


def tensorflow():
    """The tensorflow module, with torch loaded first and Keras on its TensorFlow backend."""
    preload()
    import tensorflow as tf
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(f"Keras runs on the {backend!r} backend; twinbench needs "
                           "'tensorflow' (set KERAS_BACKEND=tensorflow)")
    return tf


def loaded_versions() -> dict[str, str]:
    """Versions of Python and of the numerical packages this process has loaded (never
    imports one: asking TensorFlow for its version must not reorder imports)."""
    import platform
    versions = {"python": platform.python_version()}
    for module in ("numpy", "torch", "torchvision", "tensorflow", "keras"):
        if module in sys.modules:
            versions[module] = getattr(sys.modules[module], "__version__", "unknown")
    return versions
