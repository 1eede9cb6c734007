"""The answer a reader came for, first in every report: TensorFlow vs torch on each machine.

- Throughput: per machine, device, architecture, phase, batch size and precision, each
  framework's best mode (highest median images/s) and the ratio TF / torch of those medians,
  with a 95% percentile-bootstrap interval: each side's rounds are resampled with replacement
  (BOOTSTRAP_RESAMPLES times, fixed seed, so a report is reproducible) and the ratio of the
  resampled medians taken. It covers round-to-round noise inside the run only, not drift
  between runs (docs/methodology.md#throughput-protocol).
- Accuracy: per machine, device, architecture and recipe that both frameworks trained, the
  mean final accuracy of each (n runs), the gap paired by seed with its interval, and the
  equivalence test's verdict against the 1-point margin (thresholds.matrix_verdict:
  equivalent, different, or undetermined with the seed pairs it would take;
  docs/methodology.md#matrix). Matrix runs (shared initial weights and data order) and
  independent runs are never pooled.

Architectures, recipes and modes are read from the rows: nothing here names one.
"""
from __future__ import annotations

import statistics

import numpy as np

from reports.load import Config, Measurement
from reports.tables import DASH, Table, fmt_percent, fmt_rate, mode_label
from twinbench.thresholds import matrix_verdict

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def ratio_interval(numerator: list[float], denominator: list[float]) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of median(numerator) / median(denominator); None
    with fewer than two rounds on a side (one round says nothing about its noise)."""
    if len(numerator) < 2 or len(denominator) < 2:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    a, b = np.asarray(numerator, float), np.asarray(denominator, float)
    ia = rng.integers(0, len(a), (BOOTSTRAP_RESAMPLES, len(a)))
    ib = rng.integers(0, len(b), (BOOTSTRAP_RESAMPLES, len(b)))
    ratios = np.median(a[ia], axis=1) / np.median(b[ib], axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


THROUGHPUT_HEADERS = ["machine", "device", "arch", "phase", "batch", "precision",
                      "TensorFlow best (mode)", "torch best (mode)", "TF / torch (95% interval)",
                      "faster"]


def _best(ms: list[Measurement]) -> Measurement | None:
    ok = [m for m in ms if m.ok]
    return max(ok, key=lambda m: m.median) if ok else None


def throughput_verdict(per_machine: dict[str, dict[Config, Measurement]],
                       labels: dict[str, str]) -> Table | None:
    lines = []
    for mid, ms in per_machine.items():
        groups: dict[tuple, dict[str, list[Measurement]]] = {}
        for config, m in ms.items():
            key = (config.device, config.arch, config.phase, config.batch_size, config.precision)
            groups.setdefault(key, {}).setdefault(config.framework, []).append(m)
        for (device, arch, phase, batch, precision), by_fw in groups.items():
            tf, torch = _best(by_fw.get("tf", [])), _best(by_fw.get("torch", []))
            if tf is None and torch is None:
                continue
            cells = [labels[mid], device, arch, phase, str(batch), precision,
                     _best_cell(tf), _best_cell(torch)]
            if tf is None or torch is None:
                cells += [DASH, "only one framework measured"]
            else:
                ratio = tf.median / torch.median
                interval = ratio_interval(tf.rounds, torch.rounds)
                text = f"{ratio:.2f}"
                if interval:
                    text += f" ({interval[0]:.2f}-{interval[1]:.2f})"
                cells += [text, _faster(interval, ratio)]
            lines.append(cells)
    if not lines:
        return None
    return Table(THROUGHPUT_HEADERS, lines, ["left"] * 6 + ["right"] * 3 + ["left"])


def _best_cell(m: Measurement | None) -> str:
    if m is None:
        return DASH
    return f"{fmt_rate(m.median)} ({mode_label(m.config.framework, m.config.mode)}, n={len(m.rounds)})"


def _faster(interval: tuple[float, float] | None, ratio: float) -> str:
    if interval is None:
        return "TensorFlow" if ratio > 1 else "torch"
    if interval[0] > 1:
        return "TensorFlow"
    if interval[1] < 1:
        return "torch"
    return "tie (interval spans 1)"


ACCURACY_HEADERS = ["machine", "device", "arch", "recipe", "runs", "TensorFlow mean (n)",
                    "torch mean (n)", "TF - torch (90% interval)", "margin", "verdict"]


def accuracy_verdict(rows: list[dict], labels: dict[str, str]) -> Table | None:
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["kind"] != "accuracy":
            continue
        kind = "matrix (shared weights, data order)" if r.get("comparison") == "matrix" else "independent"
        key = (r["machine"]["id"], r["device"], r["arch"], r["recipe"], kind,
               r.get("data", {}).get("source"))
        by_seed = groups.setdefault(key, {}).setdefault(r["framework"], {})
        by_seed[r.get("seed", len(by_seed))] = r["final_accuracy"]
    lines = []
    for key in sorted(groups, key=lambda k: (labels[k[0]], *map(str, k[1:]))):
        tf, torch = groups[key].get("tf"), groups[key].get("torch")
        if not tf or not torch:
            continue   # one framework alone is a gate result (Accuracy section), not a comparison
        v = matrix_verdict(tf, torch, source=key[5])
        verdict = v.verdict if v.verdict != "undetermined" else (
            f"undetermined ({v.seeds_needed} seed pairs would tell)")
        mid, device, arch, recipe, kind, _source = key
        lines.append([labels[mid], device, arch, recipe, kind,
                      f"{fmt_percent(statistics.fmean(tf.values()), 2)} ({len(tf)})",
                      f"{fmt_percent(statistics.fmean(torch.values()), 2)} ({len(torch)})",
                      f"{100 * v.gap:+.2f} ({100 * v.ci_low:+.2f} to {100 * v.ci_high:+.2f}) points",
                      f"±{100 * v.margin:.0f} point", verdict])
    if not lines:
        return None
    return Table(ACCURACY_HEADERS, lines, ["left"] * 5 + ["right"] * 4 + ["left"])
