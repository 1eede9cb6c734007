"""Test-only switch: make the measured step itself slower by a known fraction.

`TWINBENCH_INJECT_SLOWDOWN=0.2 python -m pytest -m benchmark ...` makes every benchmark step
about 20% slower, so the regression gate's power is measured on real timings (with their real
noise) rather than on edited rows (docs/methodology.md#regression-gate). Each step is wrapped:
its prepare() (timed within compile_s) also makes the first call (compilation) and times
CALIBRATION_STEPS synchronized steps; from then on every call runs the step, synchronizes the
device and busy-waits fraction x the calibrated (median) step time. A busy-wait, not
`time.sleep`: a sleep overshoots by the scheduler's slack (tens of microseconds or more on a
busy machine), a sizeable part of a millisecond step.

The per-step synchronization is part of the switch: on a GPU a launch-bound step then loses
its overlap of host and device, so the slowdown there can exceed the fraction asked; the row
records the delay actually added. Every row measured under the switch carries
`injected_slowdown` ({"fraction", "delay_s", "calibrated_step_s", "switch"}), which the gate
refuses as a baseline and announces in a current run, and reports must show.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time

ENV = "TWINBENCH_INJECT_SLOWDOWN"
CALIBRATION_STEPS = 5     # median of 5 synchronized steps: the delay is steady to a few %
MAX_FRACTION = 10.0       # beyond 10x slower the switch is a typo, not a test


def fraction_from_env(environ=None) -> float | None:
    """The slowdown asked for in the environment, None when the switch is off (unset or 0)."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not text:
        return None
    try:
        fraction = float(text)
    except ValueError:
        raise ValueError(f"{ENV}={text!r} is not a number; give the slowdown as a fraction, "
                         f"e.g. {ENV}=0.2 for 20% slower") from None
    if not 0 <= fraction <= MAX_FRACTION:
        raise ValueError(f"{ENV}={text!r} must be between 0 and {MAX_FRACTION:g}")
    return fraction or None


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def inject(step, fraction: float):
    """A copy of the bench Step whose run() is `fraction` slower (see the module docstring);
    its info carries the `injected_slowdown` record that goes into the row."""
    record = {"fraction": fraction, "delay_s": None, "calibrated_step_s": None, "switch": ENV}
    inner_run, inner_prepare, sync = step.run, step.prepare, step.sync

    def prepare():
        inner_prepare()
        inner_run()                    # the first call compiles: not a step time
        sync()
        times = []
        for _ in range(CALIBRATION_STEPS):
            start = time.perf_counter()
            inner_run()
            sync()
            times.append(time.perf_counter() - start)
        record["calibrated_step_s"] = statistics.median(times)
        record["delay_s"] = fraction * record["calibrated_step_s"]

    def run():
        if record["delay_s"] is None:
            raise RuntimeError("a slowed-down step must be prepared before it runs")
        out = inner_run()
        sync()
        _spin(record["delay_s"])
        return out

    return dataclasses.replace(step, run=run, prepare=prepare,
                               info={**step.info, "injected_slowdown": record})


def from_env(step, environ=None):
    """The step, slowed down when TWINBENCH_INJECT_SLOWDOWN asks for it, else unchanged."""
    fraction = fraction_from_env(environ)
    return step if fraction is None else inject(step, fraction)
