"""Runtime or API? The TensorFlow/torch gap split with the Keras-on-torch arm (--arm).

Three programs, two differences each (docs/methodology.md#keras-backends):
- "tf": the Keras twin on TensorFlow; "keras-torch": the same Keras twin on Keras 3's torch
  backend; "torch": the native torch twin.
- tf against keras-torch: the same Keras program on two runtimes (the runtime part);
  keras-torch against torch: one runtime under two APIs (the API part).

Accuracy (matrix rows: shared initial weights and data order, paired by seed, in points):
    tf - torch = (tf - keras-torch) + (keras-torch - torch)
over the seeds all three ran, so the parts add up to the total exactly. Each part is the mean
of the per-seed differences with a 90% interval (thresholds.matrix_verdict's: from 3 pairs the
differences' own sample std with Student's t, below that sqrt(2) x the data source's prior
seed std, thresholds.prior_seed_std).

Throughput (per machine, device, architecture, phase, batch size and precision, each side in
its default mode: TensorFlow's tf.function graph, Keras-on-torch eager (Keras's own default
there), torch eager):
    tf / torch = (tf / keras-torch) x (keras-torch / torch)
ratios of medians, each with the percentile-bootstrap interval of reports/verdict.py.

A line whose data is missing says "not measured" in that cell instead of disappearing.
keras-jax has no native JAX twin to split against: its rows appear in the report's other
tables, not here.
"""
from __future__ import annotations

from dataclasses import dataclass

from reports.load import Config, Measurement
from reports.tables import Table
from reports.verdict import ratio_interval
from twinbench.frameworks.keras_backend_worker import DEFAULT_MODE
from twinbench.frameworks.modes import default_mode
from twinbench.thresholds import MIN_PAIRS_FOR_STD, matrix_verdict, prior_seed_std

TF, ARM, TORCH = "tf", "keras-torch", "torch"
NOT_MEASURED = "not measured"
SUPPORTS = ("What this supports: the split into runtime (Keras on TensorFlow against Keras on "
            "torch) and API (Keras on torch against native torch) holds only for the rows and "
            "machines shown, with the networks, recipes, batch sizes and modes shown; a part "
            "whose interval spans 0 (accuracy) or 1 (throughput) is not told apart from no "
            "effect; the accuracy parts rest on the matrix seeds counted (n), and the arms' "
            "own seed-to-seed spread is measured for keras_cnn_adam only "
            "(docs/methodology.md#keras-backends).")


def default_modes(device: str) -> dict[str, str]:
    """The mode each side's throughput figure comes from: its default way to run a step."""
    return {TF: default_mode(TF, device), ARM: DEFAULT_MODE["torch"], TORCH: default_mode(TORCH, device)}


# --------------------------------------------------------------------------------------
# Accuracy: differences of paired seeds
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One difference, a - b, over paired seeds: its mean and 90% interval (fractions)."""
    gap: float
    low: float
    high: float
    n: int
    spread: str    # where the interval's spread came from

    def cell(self) -> str:
        return (f"{100 * self.gap:+.2f} ({100 * self.low:+.2f} to {100 * self.high:+.2f}; "
                f"n={self.n})")


def paired_part(a: dict[int, float], b: dict[int, float], seeds, source: str | None) -> Part:
    """a - b over `seeds` (each in both): the matrix verdict's interval, with the spread of
    one difference from the pairs themselves from MIN_PAIRS_FOR_STD pairs on, else sqrt(2) x
    the data source's prior seed std."""
    seeds = sorted(seeds)
    if not seeds:
        raise ValueError("no paired seed")
    n = len(seeds)
    prior = None if n >= MIN_PAIRS_FOR_STD else prior_seed_std(source)
    v = matrix_verdict({s: a[s] for s in seeds}, {s: b[s] for s in seeds}, seed_std=prior)
    spread = ("pairs' own std, t" if prior is None else
              f"prior: sqrt(2) x {100 * prior:.1f}-point seed std")
    return Part(v.gap, v.ci_low, v.ci_high, n, spread)


ACCURACY_HEADERS = ["machine", "device", "arch", "recipe", "data", "TF - torch (total)",
                    "runtime: TF - Keras on torch", "API: Keras on torch - torch",
                    "interval's spread"]


def accuracy_split(rows: list[dict], labels: dict[str, str]) -> Table | None:
    """One line per machine, device, architecture, recipe and data source with matrix rows:
    total, runtime and API in points, each with its 90% interval and seed pairs (n)."""
    groups: dict[tuple, dict[str, dict[int, float]]] = {}
    for r in rows:
        if r["kind"] == "accuracy" and r.get("comparison") == "matrix":
            key = (r["machine"]["id"], r["device"], r["arch"], r["recipe"],
                   r.get("data", {}).get("source"))
            groups.setdefault(key, {}).setdefault(r["framework"], {})[r["seed"]] = r["final_accuracy"]
    lines = []
    for key in sorted(groups, key=lambda k: (labels[k[0]], *map(str, k[1:]))):
        mid, device, arch, recipe, source = key
        by = groups[key]
        tf, arm, torch = by.get(TF, {}), by.get(ARM, {}), by.get(TORCH, {})
        all_three = set(tf) & set(arm) & set(torch)
        # With all three, the parts and the total over the same seeds (they add up exactly);
        # without the arm, the total alone over the TensorFlow/torch pairs.
        total_seeds = all_three or (set(tf) & set(torch))
        total = paired_part(tf, torch, total_seeds, source) if total_seeds else None
        runtime = paired_part(tf, arm, all_three, source) if all_three else None
        api = paired_part(arm, torch, all_three, source) if all_three else None
        spreads = sorted({p.spread for p in (total, runtime, api) if p is not None})
        lines.append([labels[mid], device, arch, recipe, source or "?",
                      *(NOT_MEASURED if p is None else p.cell() for p in (total, runtime, api)),
                      "; ".join(spreads) or NOT_MEASURED])
    if not lines:
        return None
    return Table(ACCURACY_HEADERS, lines, ["left"] * 5 + ["right"] * 3 + ["left"])


# --------------------------------------------------------------------------------------
# Throughput: ratios of medians
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ratio:
    value: float
    interval: tuple[float, float] | None

    def cell(self) -> str:
        text = f"{self.value:.2f}"
        if self.interval:
            text += f" ({self.interval[0]:.2f}-{self.interval[1]:.2f})"
        return text


def ratio(numerator: Measurement | None, denominator: Measurement | None) -> Ratio | None:
    """median / median with its bootstrap interval; None unless both sides measured."""
    if numerator is None or denominator is None or not numerator.ok or not denominator.ok:
        return None
    return Ratio(numerator.median / denominator.median,
                 ratio_interval(numerator.rounds, denominator.rounds))


THROUGHPUT_HEADERS = ["machine", "device", "arch", "phase", "batch", "precision",
                      "TF / torch (total)", "runtime: TF / Keras on torch",
                      "API: Keras on torch / torch"]


def throughput_split(per_machine: dict[str, dict[Config, Measurement]],
                     labels: dict[str, str]) -> Table | None:
    """One line per machine, device, architecture, phase, batch size and precision that at
    least two of the three measured in their default modes (an OOM counts): the three ratios
    of their medians (95% interval), "not measured" where a side is missing or failed."""
    lines = []
    for mid, ms in per_machine.items():
        groups: dict[tuple, dict[str, Measurement]] = {}
        for config, m in ms.items():
            if config.framework not in (TF, ARM, TORCH):
                continue
            key = (config.device, config.arch, config.phase, config.batch_size, config.precision)
            groups.setdefault(key, {})
            if config.mode == default_modes(config.device)[config.framework]:
                groups[key][config.framework] = m
        for (device, arch, phase, batch, precision), by in groups.items():
            if len(by) < 2:
                continue   # one side alone has no ratio to split (it is in the other tables)
            tf, arm, torch = by.get(TF), by.get(ARM), by.get(TORCH)
            parts = (ratio(tf, torch), ratio(tf, arm), ratio(arm, torch))
            lines.append([labels[mid], device, arch, phase, str(batch), precision,
                          *(NOT_MEASURED if p is None else p.cell() for p in parts)])
    if not lines:
        return None
    return Table(THROUGHPUT_HEADERS, lines, ["left"] * 6 + ["right"] * 3)


THROUGHPUT_NOTE = ("Throughput: each side in its default mode (TensorFlow: a tf.function graph, "
                   "what Keras's fit runs; Keras on torch: eager, Keras's own default there; "
                   "torch: eager); ratios of median images/s, 95% percentile-bootstrap "
                   "intervals over the timed rounds; runtime x API = total. Accuracy: matrix "
                   "runs paired by seed, points, 90% intervals; runtime + API = total over the "
                   "seeds all three ran (n).")


def has_arm_rows(rows: list[dict]) -> bool:
    return any(r["framework"] == ARM for r in rows)


def parts(rows: list[dict], labels: dict[str, str],
          per_machine: dict[str, dict[Config, Measurement]]) -> list:
    """The report section's parts (headings, tables, sentences); [] with nothing to show."""
    out: list = []
    accuracy = accuracy_split(rows, labels)
    speed = throughput_split(per_machine, labels)
    if accuracy is not None:
        out += [("h3", "Accuracy (matrix, same initial weights and data order)"), accuracy]
    if speed is not None:
        out += [("h3", "Throughput (default modes)"), speed]
    if not out:
        return []
    if not has_arm_rows(rows):
        out.append(("p", f"Runtime and API are {NOT_MEASURED} here: no keras-torch rows "
                         "(run the matrix and the benchmark with --arm keras-torch)."))
    return out + [("p", THROUGHPUT_NOTE), ("p", SUPPORTS)]
