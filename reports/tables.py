"""Table data for the reports, and its Markdown/HTML text.

Every table is built once as plain strings (`Table`) and then printed as Markdown or HTML,
so the two report formats can never disagree about a number.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from tabulate import tabulate

from reports import stats
from reports.load import Config, Measurement
from twinbench.thresholds import wilson_interval

DASH = "—"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: list[str]  # "left" or "right" per column

    def markdown(self) -> str:
        # A literal "|" would end a Markdown cell early.
        cells = [[c.replace("|", "\\|") for c in row] for row in self.rows]
        return tabulate(cells, headers=self.headers, tablefmt="pipe", disable_numparse=True,
                        colalign=self.align)

    def html(self) -> str:
        # The "html" format escapes cell text (unlike "unsafe_html").
        return tabulate(self.rows, headers=self.headers, tablefmt="html", disable_numparse=True,
                        colalign=self.align)


def fmt_rate(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f}"


def fmt_percent(fraction: float | None, digits: int = 1) -> str:
    return DASH if fraction is None else f"{100 * fraction:.{digits}f}%"


def fmt_seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:,.0f} s"


def status_cell(m: Measurement) -> str:
    """What the img/s column says for a configuration that produced no rounds."""
    return {"oom": "OOM", "error": "error"}.get(m.status, DASH)


# --------------------------------------------------------------------------------------
# Throughput, per machine
# --------------------------------------------------------------------------------------
THROUGHPUT_HEADERS = [*Config.COLUMNS, "rounds", "median img/s", "spread (IQR % of median)",
                      "GFLOP/s", "% of ceiling"]


def throughput_table(measurements: dict[Config, Measurement]) -> Table:
    rows = []
    for config, m in measurements.items():
        if m.ok:
            iqr = stats.iqr_percent(m.rounds)
            numbers = [str(len(m.rounds)), fmt_rate(m.median),
                       DASH if iqr is None else f"{iqr:.1f}%",
                       f"{m.flops_per_s / 1e9:,.1f}", fmt_percent(m.fraction_of_ceiling)]
        else:
            numbers = [str(len(m.rounds)), status_cell(m), DASH, DASH, DASH]
        rows.append(config.cells() + numbers)
    align = ["left"] * 6 + ["right"] * 6
    return Table(THROUGHPUT_HEADERS, rows, align)


# --------------------------------------------------------------------------------------
# Accuracy, one line per run
# --------------------------------------------------------------------------------------
ACCURACY_HEADERS = ["machine", "framework", "arch", "device", "recipe", "comparison", "seed",
                    "epochs", "final accuracy", "95% interval", "threshold", "time to threshold", "train time",
                    "train img/s"]


def accuracy_table(rows: list[dict], labels: dict[str, str]) -> Table:
    lines = []
    for r in rows:
        lines.append([labels[r["machine"]["id"]], r["framework"], r["arch"], r["device"],
                      r["recipe"], r["comparison"] or DASH, str(r["seed"]), str(len(r["epochs"])),
                      fmt_percent(r["final_accuracy"]), _interval(r["final_accuracy"]),
                      fmt_percent(r["threshold"], 0),
                      _time_to_threshold(r), fmt_seconds(r["train_seconds"]),
                      fmt_rate(r["images_per_s"])])
    align = ["left"] * 6 + ["right"] * 8
    return Table(ACCURACY_HEADERS, lines, align)


def _interval(accuracy: float) -> str:
    """95% interval of one run's accuracy on the 10,000 test images (binomial, Wilson)."""
    low, high = wilson_interval(accuracy)
    return f"{fmt_percent(low)}-{fmt_percent(high)}"


def _time_to_threshold(row: dict) -> str:
    if row["threshold"] is None:
        return DASH
    if row["time_to_threshold_s"] is None:
        return "not reached"
    return fmt_seconds(row["time_to_threshold_s"])


# --------------------------------------------------------------------------------------
# Summary: accuracy, images/s and time to accuracy per machine x framework x arch x device
# --------------------------------------------------------------------------------------
SUMMARY_HEADERS = ["machine", "framework", "arch", "device", "runs",
                   "final accuracy (mean ± std, min-max)", "time to threshold (median, reached)",
                   "train img/s (recipe runs)", "best train img/s (benchmark)"]


def summary_table(rows: list[dict], labels: dict[str, str],
                  per_machine: dict[str, dict[Config, Measurement]]) -> Table:
    """ONE table answering "how accurate, how fast, how soon" for each framework x arch x device.

    Accuracy and time-to-threshold come from accuracy rows (full training runs); the best
    training img/s comes from the throughput rows (any mode or batch), named with its setting.
    The machine is part of the key because numbers from different hardware must not be pooled.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "accuracy":
            key = (r["machine"]["id"], r["framework"], r["arch"], r["device"])
            groups.setdefault(key, []).append(r)
    best: dict[tuple, Measurement] = {}
    for mid, ms in per_machine.items():
        for config, m in ms.items():
            if config.phase == "train" and m.ok:
                key = (mid, config.framework, config.arch, config.device)
                if key not in best or m.median > best[key].median:
                    best[key] = m
    lines = []
    for key in sorted(set(groups) | set(best), key=lambda k: (labels[k[0]], k[2], k[3], k[1])):
        runs = groups.get(key, [])
        lines.append([labels[key[0]], key[1], key[2], key[3], str(len(runs)),
                      _accuracy_cell(runs), _threshold_cell(runs),
                      fmt_rate(statistics.median(r["images_per_s"] for r in runs)) if runs else DASH,
                      _best_cell(best.get(key))])
    align = ["left"] * 4 + ["right"] * 5
    return Table(SUMMARY_HEADERS, lines, align)


def _accuracy_cell(runs: list[dict]) -> str:
    if not runs:
        return DASH
    acc = [r["final_accuracy"] for r in runs]
    if len(acc) == 1:
        return fmt_percent(acc[0])
    spread = 100 * statistics.stdev(acc)
    return (f"{fmt_percent(statistics.fmean(acc))} ± {spread:.1f} "
            f"({fmt_percent(min(acc))}-{fmt_percent(max(acc))})")


def _threshold_cell(runs: list[dict]) -> str:
    with_threshold = [r for r in runs if r["threshold"] is not None]
    if not with_threshold:
        return DASH
    reached = [r["time_to_threshold_s"] for r in with_threshold if r["time_to_threshold_s"] is not None]
    thresholds = sorted({r["threshold"] for r in with_threshold})
    target = "/".join(fmt_percent(t, 0) for t in thresholds)
    count = f"{len(reached)}/{len(with_threshold)}"
    if not reached:
        return f"not reached {target} ({count})"
    return f"{fmt_seconds(statistics.median(reached))} to {target} ({count})"


def _best_cell(m: Measurement | None) -> str:
    if m is None:
        return DASH
    return f"{fmt_rate(m.median)} ({m.config.mode}, batch {m.config.batch_size})"


# --------------------------------------------------------------------------------------
# Machines
# --------------------------------------------------------------------------------------
MACHINE_HEADERS = ["machine", "id", "CPU", "cores", "memory", "GPU", "CUDA", "OS", "commit",
                   "rows"]


def machines_table(groups: dict[str, list[dict]], labels: dict[str, str]) -> Table:
    lines = []
    for mid, rows in groups.items():
        fp = rows[0]["machine"]
        gpus = ", ".join(f"{g.get('name')} ({g.get('memory_gb')} GB, driver {g.get('driver')})"
                         for g in fp.get("gpu", [])) or "none"
        commits = sorted({_commit(r["machine"]) for r in rows})
        sample = " (sample fixture)" if any(r["machine"].get("sample") for r in rows) else ""
        lines.append([labels[mid] + sample, mid, fp.get("cpu_model", "?"), str(fp.get("cores", "?")),
                      f"{fp['memory_gb']} GB" if fp.get("memory_gb") else DASH, gpus,
                      fp.get("cuda") or DASH, fp.get("os", DASH), ", ".join(commits), str(len(rows))])
    return Table(MACHINE_HEADERS, lines, ["left"] * 9 + ["right"])


def _commit(fp: dict) -> str:
    commit = str(fp.get("git_commit", "unknown"))
    short = commit[:10] if commit != "unknown" else commit
    return short + ("+dirty" if fp.get("git_dirty") else "")
