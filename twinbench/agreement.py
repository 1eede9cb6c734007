"""Agreement of two dicts of arrays, tensor by tensor: the one assertion the correctness suites use.

    errors = compare(torch_grads, tf_grads, tolerances.parity("cpu").gradients, what="gradients")

Every tensor is checked against the bound of a `twinbench.tolerances.Tolerance`:

    |actual - expected| <= atol + floor[name] + rtol * |expected| + scaled * max|expected|

elementwise. On failure the AssertionError names each tensor that broke its bound, with its max
absolute error, max relative error and the bound, worst tensor first. On success the measured
errors come back, so that a test can report how close the twins actually were.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from twinbench.tolerances import Tolerance


@dataclass(frozen=True)
class Errors:
    """What was measured for one tensor."""
    max_abs: float      # max |actual - expected|
    max_rel: float      # max |actual - expected| / |expected| over elements where expected != 0
    scaled: float       # max_abs / max|expected|: the error in units of the tensor's magnitude
    allowed: float      # the largest elementwise bound (for reports: how much room there was)
    ratio: float        # max over elements of |actual - expected| / bound (> 1: out of bounds)

    def __str__(self) -> str:
        return (f"max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}, "
                f"{self.scaled:.3g} of the tensor's magnitude (allowed up to {self.allowed:.3g})")


def measure(actual, expected, tol: Tolerance = Tolerance(), floor: float = 0.0) -> Errors:
    """The errors of one array against another, in float64 so that measuring adds no error."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    diff = np.abs(a - e)
    mag = np.abs(e)
    scale = float(mag.max()) if mag.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    nonzero = mag > 0
    max_rel = float((diff[nonzero] / mag[nonzero]).max()) if nonzero.any() else 0.0
    if (diff[~nonzero] > 0).any():
        max_rel = float("inf")          # a nonzero where zero was expected
    bound = tol.atol + floor + tol.rtol * mag + tol.scaled * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / bound)   # bound 0 and diff > 0: inf
    return Errors(max_abs=max_abs, max_rel=max_rel,
                  scaled=max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf")),
                  allowed=float(np.max(bound)) if np.size(bound) else 0.0,
                  ratio=float(ratio.max()) if ratio.size else 0.0)


def compare(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
            tol: Tolerance, *, what: str = "", floor: Mapping[str, float] | None = None,
            ) -> dict[str, Errors]:
    """Check `actual` against `expected` tensor by tensor; return the errors or raise.

    floor: an absolute allowance per tensor added to the tolerance's bound, for bounds that
    depend on the tensor (e.g. one rounding of the weights per optimizer step).
    Raises AssertionError naming every tensor (layer) that is missing, misshapen, not finite,
    or out of bounds; the message leads with the worst.
    """
    prefix = f"{what}: " if what else ""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        raise AssertionError(f"{prefix}tensors differ: missing {missing}, unexpected {extra}")
    errors, problems = {}, []
    for name, exp in expected.items():
        act = actual[name]
        if np.shape(act) != np.shape(exp):
            problems.append((float("inf"), f"{name}: shape {np.shape(act)}, "
                                            f"expected {np.shape(exp)}"))
            continue
        if not (np.all(np.isfinite(act)) and np.all(np.isfinite(exp))):
            problems.append((float("inf"), f"{name}: not finite (NaN or inf)"))
            continue
        err = measure(act, exp, tol, (floor or {}).get(name, 0.0))
        errors[name] = err
        if err.ratio > 1.0:
            over = "must be equal" if err.allowed == 0 else f"{err.ratio:.3g}x the bound"
            problems.append((err.ratio, f"{name}: {err} -- {over}"))
    if problems:
        problems.sort(key=lambda p: -p[0])
        lines = "\n  ".join(text for _, text in problems)
        bound = (f"{tol} + a per-tensor floor" if floor and any((tol.rtol, tol.atol, tol.scaled))
                 else "a per-tensor floor" if floor else str(tol))
        raise AssertionError(f"{prefix}{len(problems)} of {len(expected)} tensors out of "
                             f"bounds ({bound}):\n  {lines}")
    return errors


def summary(errors: Mapping[str, Errors]) -> str:
    """One line per tensor, for printing measured errors."""
    width = max((len(k) for k in errors), default=0)
    return "\n".join(f"  {name:<{width}}  {err}" for name, err in errors.items())


def report(errors: Mapping[str, Errors], what: str, record=None) -> None:
    """Print the measured errors (shown with pytest -s) and hand each to `record(name, value)`
    (pytest's record_property: they land in the JUnit XML), as '<what>/<tensor>/max_abs'."""
    print(f"\n{what}:\n{summary(errors)}")
    if record is not None:
        for name, err in errors.items():
            record(f"{what}/{name}/max_abs", err.max_abs)
            record(f"{what}/{name}/max_rel", err.max_rel)
            record(f"{what}/{name}/scaled", err.scaled)
