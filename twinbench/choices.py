"""Looking a name up in a registry, with an error that lists what exists.

Every registry (architectures, recipes, parity tolerances per device, ...) is a dict keyed by
name; a wrong name from an option, a test or a row gets the same kind of message everywhere.
"""
from __future__ import annotations

from typing import Mapping, TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """table[name], or ValueError("unknown <what> 'x'; expected one of a, b, c")."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(table)}") from None
