"""PNG plots for the report, drawn with matplotlib's Agg renderer.

Figures are built with `matplotlib.figure.Figure` directly rather than pyplot: no GUI backend
is ever selected (the report runs headless, in CI and on GPU boxes), and no global figure
state leaks between plots. matplotlib is imported here only, so `compare` and `gate` never
pay for it.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

from reports.load import Config, Measurement, current_gate
from reports.tables import mode_label

_FRAMEWORK_COLORS = {"tf": "tab:orange", "torch": "tab:blue"}
_DEVICE_STYLES = {"cpu": "--", "gpu": "-"}
_MODE_MARKERS = {"eager": "o", "graph": "o", "compiled": "s", "xla": "^", "cuda_graph": "D"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _panels(count: int):
    """A figure with one panel per architecture, side by side (two per row beyond two)."""
    from matplotlib.figure import Figure
    cols = min(count, 2)
    rows = -(-count // cols)
    fig = Figure(figsize=(5.5 * cols, 4.2 * rows), dpi=100, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def throughput_plots(per_machine: dict[str, dict[Config, Measurement]], labels: dict[str, str],
                     out_dir: Path) -> list[Path]:
    """images/s against batch size (log-log), one file per phase, one panel per architecture.

    Colour: framework; line style: device; marker: mode. One line per machine x framework x
    device x mode x precision; error bars span the interquartile range of the rounds. OOM and
    failed configurations have no point (the tables list them).
    """
    series: dict[str, dict[str, dict[tuple, list]]] = {}  # phase -> arch -> line -> [(batch, m)]
    for mid, ms in per_machine.items():
        for config, m in ms.items():
            if not m.ok:
                continue
            line = (mid, config.framework, config.device, config.mode, config.precision)
            series.setdefault(config.phase, {}).setdefault(config.arch, {}).setdefault(
                line, []).append((config.batch_size, m))
    several_machines = len(per_machine) > 1
    written = []
    for phase, by_arch in sorted(series.items()):
        fig, axes = _panels(len(by_arch))
        for ax, (arch, lines) in zip(axes, sorted(by_arch.items())):
            for (mid, framework, device, mode, precision), points in sorted(lines.items()):
                points.sort(key=lambda p: p[0])
                batches = [b for b, _ in points]
                medians = [m.median for _, m in points]
                low, high = [], []
                for _, m in points:
                    q1, _, q3 = (statistics.quantiles(m.rounds, n=4, method="inclusive")
                                 if len(m.rounds) > 1 else (m.median,) * 3)
                    low.append(max(m.median - q1, 0))
                    high.append(max(q3 - m.median, 0))
                label = f"{framework} {device} {mode_label(framework, mode)}"
                label += "" if precision == "fp32" else f" {precision}"
                if several_machines:
                    label += f" - {labels[mid]}"
                ax.errorbar(batches, medians, yerr=[low, high], label=label, capsize=3,
                            color=_FRAMEWORK_COLORS.get(framework),
                            linestyle=_DEVICE_STYLES.get(device, ":"),
                            marker=_MODE_MARKERS.get(mode, "x"))
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _label_panel(ax, arch, "batch size", "images/s (median of rounds)", which="both")
        written.append(_save(fig, f"{phase}: images/s vs batch size (colour: framework)",
                             out_dir / f"throughput-{_safe(phase)}.png"))
    return written


def _label_panel(ax, title: str, xlabel: str, ylabel: str, which: str = "major") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which=which, alpha=0.3)
    ax.legend(fontsize="small")


def _save(fig, title: str, path: Path) -> Path:
    fig.suptitle(title)
    fig.savefig(path, format="png")
    return path


def accuracy_plots(rows: list[dict], labels: dict[str, str], out_dir: Path) -> list[Path]:
    """Test accuracy per epoch, one file per recipe, one panel per architecture, one line per
    run coloured by framework, and the recipe's gate drawn in each panel."""
    by_recipe: dict[str, dict[str, list[dict]]] = {}
    for r in rows:
        if r["kind"] == "accuracy" and r["epochs"]:
            by_recipe.setdefault(r["recipe"], {}).setdefault(r["arch"], []).append(r)
    several_machines = len({r["machine"]["id"] for r in rows}) > 1
    written = []
    for recipe, by_arch in sorted(by_recipe.items()):
        # A gate belongs to the recipe (and data source), not to a run: every panel draws the
        # gates any run of this recipe was held to (matrix runs themselves are not gated).
        gates = sorted({g for runs in by_arch.values() for g in map(current_gate, runs)
                        if g is not None})
        fig, axes = _panels(len(by_arch))
        for ax, (arch, runs) in zip(axes, sorted(by_arch.items())):
            for r in runs:
                epochs = [e["epoch"] for e in r["epochs"]]
                accuracy = [100 * e["test_accuracy"] for e in r["epochs"]]
                label = f"{r['framework']} {r['device']} seed {r['seed']}"
                if r["comparison"]:
                    label += f" ({r['comparison']})"
                if several_machines:
                    label += f" - {labels[r['machine']['id']]}"
                ax.plot(epochs, accuracy, marker="o", markersize=3, label=label,
                        color=_FRAMEWORK_COLORS.get(r["framework"]),
                        linestyle=_DEVICE_STYLES.get(r["device"], ":"))
            for threshold in gates:
                ax.axhline(100 * threshold, color="gray", linestyle=":", linewidth=1,
                           label=f"gate {100 * threshold:.0f}%")
            _label_panel(ax, arch, "epoch", "test accuracy (%)")
        written.append(_save(fig, f"{recipe}: test accuracy per epoch (colour: framework)",
                             out_dir / f"accuracy-{_safe(recipe)}.png"))
    return written
