"""`gate`: fail when throughput regressed beyond what run-to-run noise explains.

The decision for one configuration (`gate_decision`, a pure function):

    s_x  = 1.4826 * MAD(rounds_x) / median(rounds_x)     robust CV of single rounds, x in {b, c}
    se_x = sqrt(pi/2) * s_x / sqrt(n_x)                   relative standard error of the median
    combined = sqrt(se_b^2 + se_c^2)
    allowed_drop = max(floor, k * combined)               defaults: floor 0.05, k 3
    regression  <=>  median_c < median_b * (1 - allowed_drop)

Why the standard error of the median rather than the spread of single rounds: the gate
compares two medians, and a median of n rounds varies about sqrt(n) times less than one
round. With the spread of single rounds, 20 rounds at 5% CV would allow a 21% drop
(3 * sqrt(2) * 5%), so the gate could not see a 20% slowdown. The floor covers what rounds
within one run cannot show: drift between runs (clocks, thermals, neighbours), which on the
H100 reached several percent (../shared/FACTS.md). Fewer than MIN_ROUNDS rounds on either
side: the spread cannot be estimated, and the gate refuses rather than guesses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from reports import stats
from reports.load import Config, by_machine, measurements
from reports.tables import DASH, Table, fmt_rate, status_cell
from twinbench.fingerprint import hardware_label

FLOOR = 0.05     # smallest drop ever called a regression (between-run drift, see docstring)
K = 3.0          # standard errors: about 0.1% false alarms per configuration for normal noise
MIN_ROUNDS = 3   # a MAD of fewer rounds says nothing about the spread


class GateInputError(Exception):
    """The inputs cannot be gated (different hardware, too few rounds): exit 2, not 1."""


@dataclass(frozen=True)
class GateDecision:
    baseline_median: float
    current_median: float
    change: float            # current / baseline - 1 (negative: slower)
    baseline_se: float       # relative standard error of each median
    current_se: float
    combined_se: float
    allowed_drop: float      # max(floor, k * combined_se)
    regression: bool


def gate_decision(baseline_rounds, current_rounds, *, floor: float = FLOOR,
                  k: float = K) -> GateDecision:
    """The regression verdict for one configuration (formula in the module docstring)."""
    for side, rounds in (("baseline", baseline_rounds), ("current", current_rounds)):
        if len(rounds) < MIN_ROUNDS:
            raise ValueError(f"{side} has {len(rounds)} round(s); at least {MIN_ROUNDS} are "
                             f"needed to estimate the spread")
    base = stats.median(baseline_rounds)
    cur = stats.median(current_rounds)
    se_b = stats.relative_median_se(baseline_rounds)
    se_c = stats.relative_median_se(current_rounds)
    combined = math.hypot(se_b, se_c)
    allowed = max(floor, k * combined)
    return GateDecision(base, cur, cur / base - 1, se_b, se_c, combined, allowed,
                        regression=cur < base * (1 - allowed))


@dataclass
class GateResult:
    table: Table
    regressions: int
    compared: int
    only_baseline: int
    only_current: int


def check_same_hardware(baseline_rows: list[dict], current_rows: list[dict]) -> None:
    """GateInputError naming both sides' hardware when they are not one and the same machine."""
    base_ids, cur_ids = by_machine(baseline_rows), by_machine(current_rows)
    if len(base_ids) == 1 and base_ids.keys() == cur_ids.keys():
        return

    def describe(groups):
        return " + ".join(f"{hardware_label(g[0]['machine'])} (id {mid})" for mid, g in groups.items())

    raise GateInputError(
        f"refusing to compare different hardware: baseline from {describe(base_ids)}, "
        f"current from {describe(cur_ids)}; throughput from different machines is not a "
        f"regression signal (pass --allow-different-hardware to compare anyway)")


GATE_HEADERS = [*Config.COLUMNS, "baseline img/s (rounds)", "current img/s (rounds)", "change",
                "allowed drop", "verdict"]


def run_gate(baseline_rows: list[dict], current_rows: list[dict], *, floor: float = FLOOR,
             k: float = K, allow_different_hardware: bool = False) -> GateResult:
    """Gate every configuration; configurations on one side only are listed, not failed."""
    if not allow_different_hardware:
        check_same_hardware(baseline_rows, current_rows)
    base = measurements(baseline_rows)
    cur = measurements(current_rows)
    too_few = [f"{' '.join(c.cells())}: baseline {len(base[c].rounds)}, current {len(cur[c].rounds)}"
               for c in base if c in cur and base[c].ok and cur[c].ok
               and min(len(base[c].rounds), len(cur[c].rounds)) < MIN_ROUNDS]
    if too_few:
        raise GateInputError(f"cannot estimate the spread with fewer than {MIN_ROUNDS} rounds per "
                             f"configuration; rerun with more rounds: " + "; ".join(too_few))
    rows, regressions, compared = [], 0, 0
    for config in sorted(set(base) | set(cur), key=Config.sort_key):
        b, c = base.get(config), cur.get(config)
        cells = config.cells()
        cells.append(DASH if b is None else _rate(b))
        cells.append(DASH if c is None else _rate(c))
        if b is None or c is None:
            cells += [DASH, DASH, "only in baseline" if c is None else "only in current"]
        elif b.ok and c.ok:
            compared += 1
            d = gate_decision(b.rounds, c.rounds, floor=floor, k=k)
            regressions += d.regression
            cells += [f"{100 * d.change:+.1f}%", f"{100 * d.allowed_drop:.1f}%",
                      "REGRESSION" if d.regression else "ok"]
        elif b.ok:  # it ran before and fails now: that is a regression too
            compared += 1
            regressions += 1
            cells += [DASH, DASH, f"REGRESSION (now {status_cell(c)})"]
        else:
            cells += [DASH, DASH, "ok (runs now)" if c.ok else f"not compared ({status_cell(b)} before)"]
        rows.append(cells)
    table = Table(GATE_HEADERS, rows, ["left"] * 6 + ["right"] * 5 + ["left"])
    only_b = sum(1 for r in rows if r[-1] == "only in baseline")
    only_c = sum(1 for r in rows if r[-1] == "only in current")
    return GateResult(table, regressions, compared, only_b, only_c)


def _rate(m) -> str:
    return f"{fmt_rate(m.median)} ({len(m.rounds)})" if m.ok else status_cell(m)
