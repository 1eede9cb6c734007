"""Training runs as test items, and the verdicts over a cell's runs.

Every training run is its own test item (framework x architecture x recipe x device x seed),
so pytest-xdist can spread them over workers and hosts. A *cell* is what a verdict is about:
- an accuracy cell: one reference recipe in one framework on one device, its gate over all
  seeds (the accuracy tier, suites/test_accuracy.py);
- a matrix cell: one architecture x recipe on one device, both frameworks, the fair
  comparison over all seeds (suites/test_matrix.py);
- an arm's matrix cell (--arm): one Keras-backend arm beside a matrix cell, its runs from the
  same initial weights and data order as the TensorFlow twin's; it checks that every seed has
  a row and started from TensorFlow's weights. Its rows feed the report's runtime-vs-API
  attribution; the TensorFlow-vs-torch verdict is the matrix cell's, unchanged.
A verdict is decided once, from the rows of every run the cell expected; a run without a row
(it failed, crashed, or the session was interrupted) is named, and the cell is incomplete,
never decided on a silently smaller N (docs/methodology.md#scale-out).

`python -m twinbench.cells --seeds N DIR...` decides the cells again from rows gathered from
several sessions (shards, machines): the rows are deduplicated by row id first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from twinbench import thresholds

ACCURACY, MATRIX = "accuracy", "matrix"
ARM_MATRIX = "matrix-arm"         # the cell kind of an arm's runs beside a matrix cell
MATRIX_FRAMEWORKS = ("tf", "torch")
VERDICTS_FILE = "verdicts.jsonl"   # beside the rows; not *.json, so row readers never see it
# Pass: the cell's rule holds. Fail: it does not. Undetermined: the rows are too few to tell
# (an equivalence test whose interval is wider than its margin; reported, not a failure).
# Incomplete: rows are missing or ambiguous, so nothing is decided (the session fails too).
# Skipped: every run skipped (e.g. no GPU).
PASS, FAIL, UNDETERMINED, INCOMPLETE, SKIPPED = (
    "pass", "fail", "undetermined", "incomplete", "skipped")
FAILING = (FAIL, INCOMPLETE)


@dataclass(frozen=True, order=True)
class RunSpec:
    """One training run; its `id` is the test item's parameter id."""
    kind: str          # ACCURACY or MATRIX
    framework: str
    arch: str
    recipe: str
    device: str
    seed: int

    @property
    def id(self) -> str:
        if self.kind == ACCURACY:   # the recipe fixes the architecture
            return f"{self.framework}-{self.recipe}-{self.device}-seed{self.seed}"
        return f"{self.arch}-{self.recipe}-{self.framework}-{self.device}-seed{self.seed}"

    @property
    def cell(self) -> tuple:
        if self.kind == ACCURACY:
            return (ACCURACY, self.framework, self.arch, self.recipe, self.device)
        if self.framework not in MATRIX_FRAMEWORKS:   # a Keras-backend arm beside the matrix
            return (ARM_MATRIX, self.framework, self.arch, self.recipe, self.device)
        return (MATRIX, self.arch, self.recipe, self.device)

    @classmethod
    def of_row(cls, row: dict) -> "RunSpec":
        kind = MATRIX if row.get("comparison") == MATRIX else ACCURACY
        return cls(kind, row["framework"], row["arch"], row["recipe"], row["device"], row["seed"])


def cell_label(cell: tuple) -> str:
    if cell[0] == ACCURACY:
        _, framework, _, recipe, device = cell
        return f"{framework}/{recipe} on {device}"
    if cell[0] == ARM_MATRIX:
        _, framework, arch, recipe, device = cell
        return f"{framework} beside matrix {arch}/{recipe} on {device}"
    _, arch, recipe, device = cell
    return f"matrix {arch}/{recipe} on {device}"


def _run_label(spec: RunSpec) -> str:
    who = "" if spec.cell[0] != MATRIX else f"{spec.framework} "
    return f"seed {spec.seed} of {who}{cell_label(spec.cell)}"


# --------------------------------------------------------------------------------------
# The decision rules: ONE function per verdict kind (twinbench/thresholds.py holds the rules)
# --------------------------------------------------------------------------------------
def accuracy_gate(accuracies: list[float], threshold: float, source: str
                  ) -> tuple[str, str, dict]:
    """(status, explanation, figures) of the accuracy gate over one cell's seeds
    (thresholds.accuracy_gate). `source`, the data source, is what the rule's prior seed
    spread is looked up by."""
    gate = thresholds.accuracy_gate(accuracies, threshold, source=source)
    spread = "" if gate.std is None else f", std {gate.std:.2%}"
    text = (f"{gate.n} run(s), mean {gate.mean:.2%}{spread}, min {min(accuracies):.2%}, "
            f"max {max(accuracies):.2%}; {gate.rule} = {gate.upper_bound:.2%} vs threshold "
            f"{threshold:.1%}")
    return (PASS if gate.passed else FAIL), text, {**asdict(gate), "source": source}


def matrix_verdict(tf_by_seed: dict[int, float], torch_by_seed: dict[int, float],
                   source: str | None = None) -> tuple[str, str, dict]:
    """(status, explanation, figures) of the fair comparison over the paired seeds
    (thresholds.matrix_verdict): equivalent passes, different fails, undetermined is reported
    without failing the session."""
    v = thresholds.matrix_verdict(tf_by_seed, torch_by_seed, source=source)
    text = (f"{v.verdict}: {v.n_pairs} seed pair(s), gap {v.gap:+.2%}, interval "
            f"{v.ci_low:+.2%} to {v.ci_high:+.2%} against +-{v.margin:.2%}; {v.seeds_needed} "
            f"pairs would resolve it ({v.rule})")
    status = {"equivalent": PASS, "different": FAIL, "undetermined": UNDETERMINED}[v.verdict]
    return status, text, asdict(v)


# --------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------
@dataclass
class Verdict:
    cell: tuple
    status: str                 # PASS, FAIL, INCOMPLETE or SKIPPED
    text: str
    seeds: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # missing / duplicate / mismatched rows
    figures: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return cell_label(self.cell)

    def lines(self) -> list[str]:
        head = f"{self.status.upper()} {self.label}: {self.text}"
        return [head] + [f"  {p}" for p in self.problems]

    def record(self) -> dict:
        return {**asdict(self), "cell": self.label, "cell_key": list(self.cell)}


def _row_for(spec: RunSpec, rows: list[dict], outcome: str | None, problems: list[str]):
    if not rows:
        why = outcome or "the run failed or was interrupted"
        problems.append(f"{_run_label(spec)} has no row: {why}")
        return None
    if len(rows) > 1:
        runs = ", ".join(sorted({r["run_id"] for r in rows}))
        problems.append(f"{_run_label(spec)} has {len(rows)} rows (runs {runs}): keep one")
        return None
    return rows[0]


def decide(expected: list[RunSpec], rows: list[dict],
           outcomes: dict[RunSpec, str] | None = None,
           skipped: dict[RunSpec, str] | None = None) -> list[Verdict]:
    """One verdict per cell of `expected`, from the accuracy `rows` (already deduplicated).
    `outcomes`: why a run has no row when known ("failed in call"); `skipped`: runs that
    skipped, with the reason."""
    outcomes, skipped = outcomes or {}, skipped or {}
    by_spec: dict[RunSpec, list[dict]] = {}
    for row in rows:
        if row.get("kind") == "accuracy":
            by_spec.setdefault(RunSpec.of_row(row), []).append(row)
    cells: dict[tuple, list[RunSpec]] = {}
    for spec in sorted(set(expected)):
        cells.setdefault(spec.cell, []).append(spec)
    return [_verdict(cell, specs, by_spec, outcomes, skipped) for cell, specs in cells.items()]


def _verdict(cell, specs, by_spec, outcomes, skipped) -> Verdict:
    seeds = sorted({s.seed for s in specs})
    if all(s in skipped for s in specs):
        reasons = "; ".join(sorted(set(skipped.values())))
        return Verdict(cell, SKIPPED, f"every run skipped: {reasons}", seeds)
    problems: list[str] = []
    found = {}
    for spec in specs:
        row = _row_for(spec, by_spec.get(spec, []), skipped.get(spec) or outcomes.get(spec),
                       problems)
        if row is not None:
            found[spec] = row
    if cell[0] == ACCURACY:
        status, text, figures = _decide_accuracy(cell, found, problems)
    elif cell[0] == ARM_MATRIX:
        status, text, figures = _decide_arm(cell, found, by_spec, problems)
    else:
        status, text, figures = _decide_matrix(found, problems)
    if problems:
        status = INCOMPLETE
        text = f"not decided ({len(problems)} problem(s) below); {text}"
    return Verdict(cell, status, text, seeds, problems, figures)


def _decide_accuracy(cell, found: dict, problems: list[str]):
    if not found:
        return FAIL, "no rows", {}
    _, _, _, recipe, _ = cell
    sources = {r["data"]["source"] for r in found.values()}
    if len(sources) > 1:
        problems.append(f"rows come from different data sources: {', '.join(sorted(sources))}")
        return FAIL, "mixed data", {}
    source = sources.pop()
    try:
        threshold = thresholds.threshold(source, recipe)
    except thresholds.NoThreshold as exc:
        problems.append(str(exc))
        return FAIL, "no threshold", {}
    accuracies = [found[s]["final_accuracy"] for s in sorted(found)]
    return accuracy_gate(accuracies, threshold, source)


def _decide_matrix(found: dict, problems: list[str]):
    by_fw = {fw: {s.seed: r for s, r in found.items() if s.framework == fw}
             for fw in MATRIX_FRAMEWORKS}
    # The fair comparison rests on both twins starting from the same (Keras-initialised)
    # weights: a pair whose rows record different starting points compares nothing.
    for seed in sorted(set(by_fw["tf"]) & set(by_fw["torch"])):
        a, b = by_fw["tf"][seed]["initial_weights"], by_fw["torch"][seed]["initial_weights"]
        if a != b:
            problems.append(f"seed {seed}: tf and torch started from different weights "
                            f"(digests {a} and {b})")
    accuracy = {fw: {seed: r["final_accuracy"] for seed, r in rows.items()}
                for fw, rows in by_fw.items()}
    if not set(accuracy["tf"]) & set(accuracy["torch"]):
        return FAIL, "no seed with both frameworks' rows", {}
    sources = {r["data"]["source"] for r in found.values()}
    if len(sources) > 1:
        problems.append(f"rows come from different data sources: {', '.join(sorted(sources))}")
        return FAIL, "mixed data", {}
    return matrix_verdict(accuracy["tf"], accuracy["torch"], sources.pop())


def _decide_arm(cell, found: dict, by_spec: dict, problems: list[str]):
    """An arm beside a matrix cell: every seed's row started from the TensorFlow twin's
    weights of that seed (the same digest). No verdict of its own: the runtime and API parts
    of the TensorFlow/torch gap are the report's attribution table (reports/runtime_api.py)."""
    _, arm, arch, recipe, device = cell
    if not found:
        return FAIL, "no rows", {}
    unpaired = []
    for spec, row in sorted(found.items()):
        tf_rows = by_spec.get(RunSpec(MATRIX, "tf", arch, recipe, device, spec.seed), [])
        if len(tf_rows) != 1:
            unpaired.append(spec.seed)
            continue
        a, b = tf_rows[0]["initial_weights"], row["initial_weights"]
        if a != b:
            problems.append(f"seed {spec.seed}: {arm} and tf started from different weights "
                            f"(digests {b} and {a})")
    accuracies = [r["final_accuracy"] for r in found.values()]
    text = (f"{len(found)} run(s) from TensorFlow's initial weights, mean final accuracy "
            f"{sum(accuracies) / len(accuracies):.2%}; its part of the TensorFlow/torch gap is "
            f"in the report's runtime-vs-API table")
    if unpaired:
        text += f" (seeds {unpaired}: no single tf row to check the start against)"
    return PASS, text, {"n": len(found), "mean": sum(accuracies) / len(accuracies),
                        "unpaired_seeds": unpaired}


# --------------------------------------------------------------------------------------
# Rows gathered from several sessions, and the verdicts file
# --------------------------------------------------------------------------------------
def expected_from_rows(rows: list[dict], seeds: int) -> list[RunSpec]:
    """Seeds 0..seeds-1 of every cell some row belongs to (both frameworks for matrix cells,
    and the matrix cell of an arm's matrix row)."""
    specs = set()
    for row in rows:
        if row.get("kind") != "accuracy":
            continue
        spec = RunSpec.of_row(row)
        frameworks = (spec.framework,)
        if spec.kind == MATRIX:
            frameworks = tuple(dict.fromkeys(MATRIX_FRAMEWORKS + frameworks))
        for framework in frameworks:
            for seed in range(seeds):
                specs.add(RunSpec(spec.kind, framework, spec.arch, spec.recipe, spec.device, seed))
    return sorted(specs)


def write_verdicts(results_dir, verdicts: list[Verdict]) -> Path:
    """All verdicts, one JSON object a line, written atomically beside the rows."""
    directory = Path(results_dir)
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(v.record(), sort_keys=True, allow_nan=False) + "\n"
                   for v in verdicts)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{VERDICTS_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, directory / VERDICTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / VERDICTS_FILE


def read_verdicts(results_dir) -> list[dict]:
    """The verdicts a session wrote (for the report); [] when it wrote none."""
    path = Path(results_dir) / VERDICTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    from twinbench.results import read_rows
    parser = argparse.ArgumentParser(
        prog="python -m twinbench.cells",
        description="Decide the accuracy gates and matrix verdicts from rows gathered from "
                    "several sessions (shards, machines). Exit 0: every cell passes; 1: a cell "
                    "fails or is incomplete; 2: no rows.")
    parser.add_argument("--seeds", type=int, required=True,
                        help="seeds every cell should have (0..N-1)")
    parser.add_argument("--write", metavar="DIR", help="also write verdicts.jsonl into DIR")
    parser.add_argument("results", nargs="+", help="result directories or files")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    # read_rows counts each row once, however many shard copies the directories hold
    rows = read_rows(args.results, on_error="skip",
                     warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    expected = expected_from_rows(rows, args.seeds)
    if not expected:
        print("error: no accuracy rows in " + ", ".join(args.results), file=sys.stderr)
        return 2
    verdicts = decide(expected, rows)
    for verdict in verdicts:
        print("\n".join(verdict.lines()))
    if args.write:
        write_verdicts(args.write, verdicts)
    return 1 if any(v.status in FAILING for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
