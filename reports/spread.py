"""`spread`: the drift between runs that the regression gate must see through, measured, and
the run counts a gate at the device class's practical threshold needs at that drift
(docs/methodology.md#regression-gate).

Input: several runs (pytest sessions) of the benchmark tier on ONE machine, e.g. the quick
tier run R times. Per configuration: the runs, the between-run spread (standard deviation of
the log run medians, reports.stats.log_spread), the typical within-run spread of single
rounds, and for 10 / 15 / 20 baseline runs the fewest current runs whose allowed drop
(reports.gate.allowed_drop, 80% power, a configuration's strictest threshold in the gate's
weighted Holm: alpha x (1 - SUITE_ALPHA_SHARE) / configurations) stays
within the practical threshold T of the device class. The worst configuration decides.
"""
from __future__ import annotations

import statistics

from reports import stats
from reports.gate import (FAMILY_ALPHA, FLOOR_FRACTION, PRACTICAL_THRESHOLD, SUITE_ALPHA_SHARE,
                          allowed_drop)
from reports.load import by_machine, machine_labels, measurements
from reports.tables import Table

BASELINES = (10, 15, 20)
MAX_CURRENT = 10


def current_runs_needed(spread: float, threshold: float, configurations: int,
                        baseline: int) -> int | None:
    """Fewest current runs (<= MAX_CURRENT) whose allowed drop is within `threshold`."""
    level = FAMILY_ALPHA * (1 - SUITE_ALPHA_SHARE) / configurations
    for n in range(2, MAX_CURRENT + 1):
        drop = allowed_drop(baseline, n, level, spread, threshold * FLOOR_FRACTION)
        if drop is not None and drop <= threshold:
            return n
    return None


def spread_tables(rows: list[dict]) -> list[tuple[str, Table]]:
    labels = machine_labels(rows)
    out = []
    for mid, group in by_machine(rows).items():
        measured = {c: m for c, m in measurements(group).items() if len(m.run_medians) >= 2}
        if not measured:
            continue
        lines = []
        for config, m in measured.items():
            spread = stats.log_spread(m.run_medians)
            per_run = [stats.relative_spread(r) for r in m.runs.values() if len(r) >= 3]
            within = statistics.median(per_run) if per_run else None
            threshold = PRACTICAL_THRESHOLD[config.device]
            needed = [current_runs_needed(spread, threshold, len(measured), b) for b in BASELINES]
            lines.append([config.framework, config.arch, config.mode, config.phase,
                          str(config.batch_size), str(len(m.run_medians)), f"{spread:.1%}",
                          "—" if within is None else f"{within:.1%}", f"{threshold:.0%}",
                          " / ".join("more than 10" if n is None else str(n) for n in needed)])
        headers = ["framework", "arch", "mode", "phase", "batch", "runs",
                   "between runs (sd of log medians)", "within a run (rounds, robust CV)",
                   "threshold T", "current runs needed for 10 / 15 / 20 baseline runs"]
        out.append((f"{labels[mid]}: {len(measured)} configurations",
                    Table(headers, lines, ["left"] * 5 + ["right"] * 5)))
    return out
