"""The twin architectures, registered by name; suites parametrize over ARCHITECTURES.

Each architecture module defines the same network in both frameworks, side by side, with
the same layer names in the same order, and imports each framework inside its builder so
that an environment with only one framework still collects.

A new twin is one new module in this package that defines `SPEC` (a models.spec.Architecture):
every such module is found and registered on import, in file-name order. Options, result-row
validation, the benchmark's case list and the reports all read ARCHITECTURES; the twin's
benchmark step trains with the recipe that trains it (twinbench/recipes.py `for_arch`).
Code outside the package (a test's throwaway twin) calls `register(spec)`.
"""
from __future__ import annotations

import importlib
import pkgutil

from models.spec import Architecture
from twinbench.choices import lookup

ARCHITECTURES: dict[str, Architecture] = {}


def register(spec: Architecture) -> Architecture:
    """Add an architecture; a second one under the same name is refused."""
    if not isinstance(spec, Architecture):
        raise TypeError(f"register takes a models.spec.Architecture, got {type(spec).__name__}")
    if spec.name in ARCHITECTURES:
        raise ValueError(f"architecture {spec.name!r} is registered already")
    ARCHITECTURES[spec.name] = spec
    return spec


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in ("spec", "layout") or info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if spec is not None:
            register(spec)


def get(name: str) -> Architecture:
    return lookup(ARCHITECTURES, name, "architecture")


_discover()
