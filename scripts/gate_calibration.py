"""Calibrate the throughput gate on a real machine: A/A false alarms and injected-slowdown
detections of `python -m reports gate`, with the numbers of runs that take
(docs/methodology.md#regression-gate).

    python scripts/gate_calibration.py measure --out DIR            # the benchmark runs
    python scripts/gate_calibration.py analyze --out DIR            # the gate decisions, a table
    python scripts/gate_calibration.py drift --out DIR              # plain runs vs the baseline
    python scripts/gate_calibration.py measure --out DIR --dry-run  # what it would run, and how long

`measure` runs the quick tier's gated benchmarks (`python -m pytest
suites/test_throughput.py::test_throughput -m benchmark --quick --device cpu
--results=DIR/<set>/<NNN>`: the configurations whose rows the gate reads; the quick tier's
augmentation and harness-overhead benchmarks write no such rows and took most of a quick
run's time) as separate pytest sessions, one after the other: BASELINE runs
into DIR/baseline, then DECISIONS x CURRENT plain runs into DIR/plain alternating with as many
with TWINBENCH_INJECT_SLOWDOWN=SLOWDOWN into DIR/slow. It resumes where it stopped (a run whose
directory holds rows is kept), on the same machine only: the gate refuses a baseline from
other hardware. `analyze` then gates each disjoint set of CURRENT plain runs,
and each set of slowed-down runs, against the one baseline, as a CI job would: the A/A
decisions share the baseline (so does CI), and no run is used twice on the current side.

Defaults: 10 baseline runs, 20 decisions of 4 current runs each side, 20% slowdown: 170 runs.
`--current 3` (the fewest with which the rank test can reach Holm's first level over the quick
tier's 12 configurations, docs/methodology.md#regression-gate) makes it 130 runs. `--dry-run`
prints the time this takes at the minutes per run below. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from reports.gate import (BASELINE_RUNS, CANNOT_RESOLVE, CURRENT_RUNS,  # noqa: E402
                          EXIT_CANNOT_RESOLVE, EXIT_REGRESSION, REGRESSION, GateInputError,
                          run_gate)
from reports.load import measurements  # noqa: E402
from reports.tables import Table  # noqa: E402
from twinbench.results import read_rows  # noqa: E402
from twinbench.slowdown import ENV as SLOWDOWN_ENV  # noqa: E402

DECISIONS = 20              # issue 13: at least 20 A/A and 20 slowed-down decisions
SLOWDOWN = 0.20
QUICK_RUN_MINUTES = 0.7     # one run on the 2-core CPU box (40-42 s measured), for the estimate
# Only the gated configurations: the whole quick tier also times augmentation and the harness,
# which write no rows the gate reads (about 3 minutes a run instead of about 1 on the CPU box).
BENCH_ARGS = ["suites/test_throughput.py::test_throughput", "-m", "benchmark", "--quick",
              "--device", "cpu", "-p", "no:cacheprovider", "-q"]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json"))) \
        if root.is_dir() else []


def plan(out: Path, baseline: int, current: int, decisions: int) -> list[tuple[Path, bool]]:
    """(results directory, slowed down) for every run still to be measured."""
    # The baseline first (as in CI, it predates the change), then plain and slowed-down runs
    # alternately: a drift of the machine during the hours this takes then touches both kinds
    # alike, and a measurement stopped early still leaves as many decisions of each kind.
    order = [("baseline", i, False) for i in range(baseline)]
    for i in range(decisions * current):
        order += [("plain", i, False), ("slow", i, True)]
    todo = []
    for name, i, slow in order:
        run_dir = out / name / f"{i:03d}"
        if not (run_dir.is_dir() and any(run_dir.glob("*.json"))):
            todo.append((run_dir, slow))
    return todo


def measure(args) -> int:
    todo = plan(args.out, args.baseline, args.current, args.decisions)
    print(f"{len(todo)} quick run(s) to go, about {len(todo) * QUICK_RUN_MINUTES / 60:.1f} h "
          f"at {QUICK_RUN_MINUTES} min each", flush=True)
    for run_dir, slow in todo:
        env = dict(os.environ)
        env.pop(SLOWDOWN_ENV, None)
        if slow:
            env[SLOWDOWN_ENV] = str(args.slowdown)
        command = [sys.executable, "-m", "pytest", *BENCH_ARGS, f"--results={run_dir.resolve()}",
                   *args.pytest_args]
        print(("[slowed] " if slow else "") + " ".join(command), flush=True)
        if args.dry_run:
            continue
        start = time.monotonic()
        code = subprocess.run(command, env=env, cwd=ROOT).returncode  # the suite's own rootdir
        print(f"  exit {code} after {time.monotonic() - start:.0f} s", flush=True)
        if code != 0:
            print(f"error: the benchmark run failed (exit {code}); fix it and rerun this command "
                  f"(finished runs are kept)", file=sys.stderr)
            return 2
    return 0


def _rows(run_dirs: list[Path]) -> list[dict]:
    return [row for d in run_dirs for row in read_rows([d])]


def decisions(out: Path, current: int) -> list[dict]:
    """Every gate decision the measured runs allow: each disjoint group of `current` runs of
    DIR/plain and of DIR/slow against all of DIR/baseline."""
    baseline_dirs = _run_dirs(out / "baseline")
    if not baseline_dirs:
        raise SystemExit(f"error: no runs under {out / 'baseline'}; run `measure` first")
    baseline = _rows(baseline_dirs)
    results = []
    for kind in ("plain", "slow"):
        dirs = _run_dirs(out / kind)
        for start in range(0, len(dirs) - current + 1, current):
            group = dirs[start:start + current]
            try:
                gate = run_gate(baseline, _rows(group))
            except GateInputError as exc:
                raise SystemExit(f"error: {exc}") from None
            results.append({"kind": "A/A" if kind == "plain" else "slowed", "exit": gate.exit_code,
                            "baseline runs": len(baseline_dirs), "current runs": len(group),
                            "regressions": gate.count(REGRESSION),
                            "cannot resolve": gate.count(CANNOT_RESOLVE),
                            "configurations": len(gate.verdicts),
                            "runs": f"{group[0].name}-{group[-1].name}",
                            "allowed": [v.allowed_drop for v in gate.verdicts if v.allowed_drop]})
    return results


def summary_lines(results: list[dict]) -> list[str]:
    lines = []
    for kind, what in (("A/A", "false alarms (exit 1)"), ("slowed", "detections (exit 1)")):
        chosen = [r for r in results if r["kind"] == kind]
        if not chosen:
            lines.append(f"{kind}: no decisions")
            continue
        alarms = sum(r["exit"] == EXIT_REGRESSION for r in chosen)
        unresolved = sum(r["exit"] == EXIT_CANNOT_RESOLVE for r in chosen)
        allowed = sorted(a for r in chosen for a in r["allowed"])
        typical = f"{allowed[len(allowed) // 2]:.1%}" if allowed else "-"
        lines.append(f"{kind}: {alarms} of {len(chosen)} {what}; {unresolved} cannot resolve; "
                     f"{chosen[0]['baseline runs']} baseline and {chosen[0]['current runs']} "
                     f"current runs per decision; median allowed drop {typical}")
    return lines


def analyze(args) -> int:
    results = decisions(args.out, args.current)
    headers = ["decision", "kind", "current runs used", "baseline runs", "current runs",
               "configurations", "regressions", "cannot resolve", "exit"]
    rows = [[str(i + 1), r["kind"], r["runs"], str(r["baseline runs"]), str(r["current runs"]),
             str(r["configurations"]), str(r["regressions"]), str(r["cannot resolve"]),
             str(r["exit"])] for i, r in enumerate(results)]
    print(Table(headers, rows, ["right", "left", "left"] + ["right"] * 6).markdown())
    print()
    for line in summary_lines(results):
        print(line)
    return 0


def drift(args) -> int:
    """Per configuration: the plain runs' median against the baseline's, over the whole
    measurement and per third of it (in run order), and the spread of the plain runs. A rank
    test assumes the runs of both sides exchangeable; a drift after the baseline breaks that."""
    def medians(kind):
        out = {}
        for d in _run_dirs(args.out / kind):
            for config, m in measurements(read_rows([d])).items():
                out.setdefault(config, []).extend(m.run_medians)
        return out
    base, plain = medians("baseline"), medians("plain")
    rows = []
    for c, b in base.items():
        p = plain.get(c, [])
        if len(p) < 3:
            continue
        ref = statistics.median(b)
        k = len(p) // 3
        thirds = [statistics.median(p[i * k:(i + 1) * k]) / ref for i in range(3)]
        rows.append([c.framework, c.arch, c.phase, str(len(b)), str(len(p)),
                     f"{statistics.median(p) / ref:.3f}", " / ".join(f"{t:.3f}" for t in thirds),
                     f"{statistics.stdev(math.log(x) for x in p):.1%}"])
    print(Table(["framework", "arch", "phase", "baseline runs", "plain runs",
                 "plain / baseline (median)", "per third, in run order",
                 "plain runs' spread (sd of logs)"], rows,
                ["left"] * 3 + ["right"] * 5).markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("measure", measure), ("analyze", analyze), ("drift", drift)):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True, help="directory of the runs")
        p.add_argument("--current", type=int, default=CURRENT_RUNS,
                       help="current runs per decision (default: %(default)s)")
        p.set_defaults(func=func)
        if name == "measure":
            p.add_argument("--baseline", type=int, default=BASELINE_RUNS,
                           help="baseline runs (default: %(default)s)")
            p.add_argument("--decisions", type=int, default=DECISIONS,
                           help="decisions of each kind (default: %(default)s)")
            p.add_argument("--slowdown", type=float, default=SLOWDOWN,
                           help="injected slowdown (default: %(default)s)")
            p.add_argument("--dry-run", action="store_true", help="print the commands only")
            p.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
