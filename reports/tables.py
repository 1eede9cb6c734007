"""Table data for the reports, and its Markdown/HTML text.

Every table is built once as plain strings (`Table`) and then printed as Markdown or HTML,
so the two report formats can never disagree about a number.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from tabulate import tabulate

from reports import stats
from reports.load import Config, Measurement, current_gate, time_to_gate
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


# What each mode is, for tables and plots. TensorFlow's default mode is a tf.function graph
# (what Keras's fit runs), whatever name its rows carry: older rows call it "eager"
# (docs/methodology.md#throughput-protocol). A mode not listed here shows its row name.
_TF_FUNCTION = "tf.function"
MODE_LABELS = {
    ("tf", "eager"): _TF_FUNCTION, ("tf", "graph"): _TF_FUNCTION, ("tf", "function"): _TF_FUNCTION,
    ("tf", "tf_function"): _TF_FUNCTION, ("tf", "xla"): _TF_FUNCTION + " + XLA",
    ("torch", "eager"): "eager", ("torch", "compiled"): "torch.compile",
    ("torch", "cuda_graph"): "CUDA graph",
    # The Keras-backend arms (--arm): Keras's jit_compile False / True on that backend.
    ("keras-torch", "eager"): "eager", ("keras-torch", "compiled"): "jit_compile (torch.compile)",
    ("keras-jax", "eager"): "eager", ("keras-jax", "compiled"): "jit_compile (jax.jit)",
}


def mode_label(framework: str, mode: str) -> str:
    return MODE_LABELS.get((framework, mode), mode)


def status_cell(m: Measurement) -> str:
    """What the img/s column says for a configuration that produced no rounds."""
    return {"oom": "OOM", "error": "error"}.get(m.status, DASH)


# --------------------------------------------------------------------------------------
# Throughput, per machine
# --------------------------------------------------------------------------------------
THROUGHPUT_HEADERS = ["framework", "mode", "device", "precision", "batch", "rounds (n)",
                      "median img/s", "spread (IQR % of median)", "GFLOP/s", "% of ceiling"]


def throughput_groups(measurements: dict[Config, Measurement]) -> dict[tuple[str, str], Table]:
    """One table per architecture x phase (in the order the measurements are sorted), so a
    reader finds a network's training figures together rather than in one long list."""
    grouped: dict[tuple[str, str], list[Measurement]] = {}
    for config, m in measurements.items():
        grouped.setdefault((config.arch, config.phase), []).append(m)
    return {key: throughput_table(ms) for key, ms in grouped.items()}


def throughput_table(measurements) -> Table:
    """Rows for the given measurements (a list, or a Config -> Measurement dict)."""
    items = measurements.values() if isinstance(measurements, dict) else measurements
    rows = []
    for m in items:
        c = m.config
        cells = [c.framework, mode_label(c.framework, c.mode), c.device, c.precision,
                 str(c.batch_size), str(len(m.rounds))]
        if m.ok:
            iqr = stats.iqr_percent(m.rounds)
            cells += [fmt_rate(m.median), DASH if iqr is None else f"{iqr:.1f}%",
                      DASH if m.flops_per_s is None else f"{m.flops_per_s / 1e9:,.1f}",
                      fmt_percent(m.fraction_of_ceiling)]
        else:
            cells += [status_cell(m), DASH, DASH, DASH]
        rows.append(cells)
    return Table(THROUGHPUT_HEADERS, rows, ["left"] * 4 + ["right"] * 6)


# --------------------------------------------------------------------------------------
# Accuracy, one line per run
# --------------------------------------------------------------------------------------
ACCURACY_HEADERS = ["machine", "framework", "arch", "device", "recipe", "comparison", "seed",
                    "epochs", "final accuracy", "95% interval (test-set sampling)", "threshold", "time to threshold", "train time",
                    "train img/s"]


def accuracy_table(rows: list[dict], labels: dict[str, str]) -> Table:
    lines = []
    for r in rows:
        lines.append([labels[r["machine"]["id"]], r["framework"], r["arch"], r["device"],
                      r["recipe"], r["comparison"] or DASH, str(r["seed"]), str(len(r["epochs"])),
                      fmt_percent(r["final_accuracy"]), _interval(r["final_accuracy"]),
                      fmt_percent(current_gate(r), 1),
                      _time_to_threshold(r), fmt_seconds(r["train_seconds"]),
                      fmt_rate(r["images_per_s"])])
    align = ["left"] * 6 + ["right"] * 8
    return Table(ACCURACY_HEADERS, lines, align)


def _interval(accuracy: float) -> str:
    """95% interval of one run's accuracy on the 10,000 test images (binomial, Wilson)."""
    low, high = wilson_interval(accuracy)
    return f"{fmt_percent(low)}-{fmt_percent(high)}"


def _time_to_threshold(row: dict) -> str:
    if current_gate(row) is None:
        return DASH
    seconds = time_to_gate(row)
    return "not reached" if seconds is None else fmt_seconds(seconds)


# --------------------------------------------------------------------------------------
# Summary: accuracy, images/s and time to accuracy per machine x framework x arch x recipe
# --------------------------------------------------------------------------------------
SUMMARY_HEADERS = ["machine", "framework", "arch", "device", "recipe", "data", "runs",
                   "final accuracy (mean, n; ± seed-to-seed std from 3 runs)",
                   "time to threshold (median of runs that reached it)",
                   "train img/s (recipe runs, median)", "best train img/s (benchmark)"]
MIN_RUNS_FOR_STD = 3   # a standard deviation of two runs is one difference: not shown


def summary_table(rows: list[dict], labels: dict[str, str],
                  per_machine: dict[str, dict[Config, Measurement]]) -> Table:
    """ONE table answering "how accurate, how fast, how soon" per machine x framework x arch x
    device x recipe x data source x kind of run (matrix runs share initial weights with the
    other framework; independent runs do not): unlike runs are never pooled.

    The best training img/s comes from the throughput rows (any mode or batch) of the same
    machine, framework, arch and device, named with its setting.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "accuracy":
            kind = "matrix" if r.get("comparison") == "matrix" else "gate"
            key = (r["machine"]["id"], r["framework"], r["arch"], r["device"], r["recipe"],
                   f"{r.get('data', {}).get('source', '?')} ({kind})")
            groups.setdefault(key, []).append(r)
    best: dict[tuple, Measurement] = {}
    for mid, ms in per_machine.items():
        for config, m in ms.items():
            if config.phase == "train" and m.ok:
                key = (mid, config.framework, config.arch, config.device)
                if key not in best or m.median > best[key].median:
                    best[key] = m
    keys = list(groups) + [k + (DASH, DASH) for k in best
                           if not any(g[:4] == k for g in groups)]
    lines = []
    for key in sorted(keys, key=lambda k: (labels[k[0]], k[2], k[3], k[4], k[1], k[5])):
        runs = groups.get(key, [])
        lines.append([labels[key[0]], *key[1:6], str(len(runs)),
                      _accuracy_cell(runs), _threshold_cell(runs),
                      fmt_rate(statistics.median(r["images_per_s"] for r in runs)) if runs else DASH,
                      _best_cell(best.get(key[:4]))])
    align = ["left"] * 6 + ["right"] * 5
    return Table(SUMMARY_HEADERS, lines, align)


def _accuracy_cell(runs: list[dict]) -> str:
    if not runs:
        return DASH
    acc = [r["final_accuracy"] for r in runs]
    text = f"{fmt_percent(statistics.fmean(acc))} (n={len(acc)}"
    if len(acc) >= MIN_RUNS_FOR_STD:
        text += f"; ± {100 * statistics.stdev(acc):.1f}"
    if len(acc) > 1:
        text += f"; {fmt_percent(min(acc))}-{fmt_percent(max(acc))}"
    return text + ")"


def _threshold_cell(runs: list[dict]) -> str:
    with_threshold = [r for r in runs if current_gate(r) is not None]
    if not with_threshold:
        return DASH
    reached = [t for t in map(time_to_gate, with_threshold) if t is not None]
    thresholds = sorted({current_gate(r) for r in with_threshold})
    target = "/".join(fmt_percent(t, 1) for t in thresholds)
    count = f"reached in {len(reached)} of {len(with_threshold)} runs"
    if not reached:
        return f"not reached {target} ({count})"
    return f"{fmt_seconds(statistics.median(reached))} to {target} ({count})"


def _best_cell(m: Measurement | None) -> str:
    if m is None:
        return DASH
    mode = mode_label(m.config.framework, m.config.mode)
    return f"{fmt_rate(m.median)} ({mode}, batch {m.config.batch_size}, n={len(m.rounds)})"


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
