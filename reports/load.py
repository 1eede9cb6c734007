"""From validated result rows to throughput configurations and their pooled rounds.

A configuration is what a throughput number depends on besides the machine: framework,
architecture, device, mode, phase, batch size and precision policy (TF32 or autocast change
GPU numbers severalfold, so they must never be pooled with plain fp32). Several rows of the
same configuration on the same machine (several runs in one results directory) are kept apart
by their run id: rounds inside one run share that run's clocks, thermals and neighbours, so
the rounds of several runs are NOT independent draws, and a run's median is one replicate
(docs/methodology.md#regression-gate). A configuration's figure is the median of its run
medians; `rounds` keeps every round only for displays of the spread inside runs.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from twinbench.fingerprint import host_label

# Orders used for sorting, so tables read in a stable, meaningful order.
_MODE_ORDER = {"eager": 0, "graph": 0, "compiled": 1, "xla": 2, "cuda_graph": 3}
_PHASE_ORDER = {"train": 0, "infer": 1}


def precision_label(precision: dict) -> str:
    """'fp32' when no reduced-precision switch is on, else the switches that are, e.g. 'tf32'."""
    parts = []
    for key in sorted(precision):
        value = precision[key]
        if value is True:
            parts.append(key)
        elif value not in (None, False, "", "float32", "fp32"):
            parts.append(f"{key}={value}")
    return "+".join(parts) or "fp32"


@dataclass(frozen=True)
class Config:
    """One throughput configuration (the machine is kept separately)."""
    framework: str
    arch: str
    device: str
    mode: str
    phase: str
    batch_size: int
    precision: str

    COLUMNS = ("framework", "arch", "device", "mode", "phase", "precision", "batch")

    @classmethod
    def of(cls, row: dict) -> "Config":
        return cls(row["framework"], row["arch"], row["device"], row["mode"], row["phase"],
                   row["batch_size"], precision_label(row["precision"]))

    def cells(self) -> list[str]:
        return [self.framework, self.arch, self.device, self.mode, self.phase, self.precision,
                str(self.batch_size)]

    def sort_key(self):
        return (self.arch, self.device, _PHASE_ORDER.get(self.phase, 9), self.batch_size,
                self.framework, _MODE_ORDER.get(self.mode, 9), self.precision)


@dataclass
class Measurement:
    """The pooled rounds of one configuration on one machine."""
    config: Config
    status: str = "ok"          # "ok" when any row succeeded, else "oom" or "error"
    rounds: list[float] = field(default_factory=list)
    rows: int = 0
    flop_per_image: float | None = None
    ceilings: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs: dict[str, list[float]] = field(default_factory=dict)   # run id -> its ok rounds
    run_status: dict[str, str] = field(default_factory=dict)     # run id -> ok | oom | error
    injected_slowdown: float | None = None   # test switch (twinbench/slowdown.py), never real

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.rounds)

    @property
    def run_medians(self) -> list[float]:
        """One figure per run that measured this configuration (its median round)."""
        return [statistics.median(r) for r in self.runs.values() if r]

    @property
    def median(self) -> float | None:
        """The median of the run medians (with one run, simply that run's median)."""
        return statistics.median(self.run_medians) if self.ok else None

    @property
    def flops_per_s(self) -> float | None:
        if self.median is None or self.flop_per_image is None:
            return None
        return self.median * self.flop_per_image

    @property
    def fraction_of_ceiling(self) -> float | None:
        if self.flops_per_s is None or not self.ceilings:
            return None
        return self.flops_per_s / statistics.median(self.ceilings)


def machine_id(row: dict) -> str:
    return row["machine"]["id"]


def by_machine(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by machine id, machines in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(machine_id(row), []).append(row)
    return groups


def machine_labels(rows: list[dict]) -> dict[str, str]:
    """Machine id -> hardware label, made unique if two different machines share a label."""
    labels: dict[str, str] = {}
    for mid, group in by_machine(rows).items():
        labels[mid] = host_label(group[0]["machine"])
    counts = {label: list(labels.values()).count(label) for label in labels.values()}
    return {mid: (f"{label} [{mid[:6]}]" if counts[label] > 1 else label)
            for mid, label in labels.items()}


def measurements(rows: list[dict]) -> dict[Config, Measurement]:
    """Pool the throughput rows of ONE machine by configuration, sorted for display.

    A failed row (OOM, error) is kept, so the tables can say "OOM" instead of dropping the
    configuration; if another row of the same configuration succeeded, the success wins.
    """
    pooled: dict[Config, Measurement] = {}
    for row in rows:
        if row["kind"] != "throughput":
            continue
        config = Config.of(row)
        m = pooled.setdefault(config, Measurement(config, status=row["status"]))
        m.rows += 1
        m.flop_per_image = row["flop_per_image"]
        if row["ceiling_flops_per_s"] is not None:
            m.ceilings.append(row["ceiling_flops_per_s"])
        injected = (row.get("injected_slowdown") or {}).get("fraction")
        if injected:
            m.injected_slowdown = injected
        run = row["run_id"]
        before = m.run_status.get(run)
        # Within one run a success wins over a failure of the same configuration (a retry).
        m.run_status[run] = "ok" if "ok" in (before, row["status"]) else before or row["status"]
        if row["status"] == "ok":
            if m.status != "ok":
                m.status, m.rounds = "ok", []
            m.rounds.extend(row["images_per_s"])
            m.runs.setdefault(run, []).extend(row["images_per_s"])
        else:
            if row["error"]:
                m.errors.append(row["error"])
            if m.status == "error" and row["status"] == "oom":
                m.status = "oom"  # OOM says more about the configuration than a generic error
    return dict(sorted(pooled.items(), key=lambda item: item[0].sort_key()))


def accuracy_rows(rows: list[dict]) -> list[dict]:
    return sorted((r for r in rows if r["kind"] == "accuracy"),
                  key=lambda r: (r["arch"], r["device"], r["framework"], r["recipe"],
                                 r["comparison"] or "", r["seed"], r["created"]))


def current_gate(row: dict) -> float | None:
    """The threshold a gated run's recipe has today on its data source (the table may have been
    re-derived since the run: docs/methodology.md#seed-spread); the one the run recorded when
    the table has none; None for matrix runs, which are compared, not gated."""
    if row.get("comparison") == "matrix":
        return None
    from twinbench import thresholds
    try:
        return thresholds.threshold(row.get("data", {}).get("source", ""), row["recipe"])
    except thresholds.NoThreshold:
        return row["threshold"]


def time_to_gate(row: dict) -> float | None:
    """Training seconds until the first epoch at or above current_gate (None: no gate, or never
    reached), from the row's per-epoch figures."""
    gate = current_gate(row)
    if gate is None:
        return None
    elapsed = 0.0
    for epoch in row["epochs"]:
        elapsed += epoch["seconds"]
        if epoch["test_accuracy"] >= gate:
            return elapsed
    return None
