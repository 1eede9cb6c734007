"""The twin architectures, registered by name; suites parametrize over ARCHITECTURES.

Each architecture module defines the same network in both frameworks, side by side, with
the same layer names in the same order, and imports each framework inside its builder so
that an environment with only one framework still collects.
"""
from __future__ import annotations

from models import keras_cnn, lenet, resnet8
from models.spec import Architecture

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (keras_cnn.SPEC, lenet.SPEC, resnet8.SPEC)}


def get(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; "
                         f"expected one of {', '.join(ARCHITECTURES)}") from None
