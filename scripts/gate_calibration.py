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
run's time) as separate pytest sessions, one after the other: BASELINE runs into
DIR/baseline, then DECISIONS x CURRENT plain runs into DIR/plain alternating with as many
with TWINBENCH_INJECT_SLOWDOWN=SLOWDOWN into DIR/slow. It resumes where it stopped (a
finished run is kept, an unfinished one's rows move aside, as in scripts/paired_runs.py),
on the same machine only (it stops when the finished runs come from other hardware: the
gate refuses a baseline from other hardware; a paired measurement, below, may go on on another
host from a decision boundary). `analyze` then
gates each disjoint set of CURRENT plain runs, and each set of slowed-down runs, against the
one baseline, as a CI job would: the A/A decisions share the baseline (so does CI), and no
run is used twice on the current side.

Defaults: 10 baseline runs, 20 decisions of 4 current runs each side, 20% slowdown: 170 runs
(4 current runs: the fewest with which the rank test can reach a configuration's strictest
level, alpha / 24 over the quick tier's 12 configurations; 3 reach only the suite score's,
docs/methodology.md#regression-gate). `--dry-run` prints the time this takes at the minutes
per run below. Run it on a quiet machine.

Paired design (`gate --paired`): `measure --pairs N` runs, per slot, two plain runs and one
slowed run (the slowed one last in even slots, first in odd ones), DECISIONS x N slots, 3 runs
a slot, no stored baseline; `analyze --pairs N` pairs consecutive plain runs (A/A; the earlier
one is the baseline in half the pairs, two by two, see pairs_of) and each slowed run
with the plain run beside it, and gates each disjoint group of N pairs. `analyze --pairs N`
reads the alternating layout above as well. Where the runs come from several machines (each
decision from one), the table names each decision's machine and the summary adds a line per
machine.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from reports.gate import (BASELINE_RUNS, CANNOT_RESOLVE, CURRENT_RUNS,  # noqa: E402
                          EXIT_CANNOT_RESOLVE, EXIT_REGRESSION, REGRESSION, GateInputError,
                          is_suite, run_gate)
from reports.load import Config, measurements  # noqa: E402
from reports.tables import Table  # noqa: E402
from scripts import paired_runs  # noqa: E402  (the same benchmark sessions)
from twinbench.fingerprint import (hardware_difference, host_label,  # noqa: E402
                                  machine_fingerprint)
from twinbench.results import read_rows  # noqa: E402
from twinbench.slowdown import ENV as SLOWDOWN_ENV  # noqa: E402

DECISIONS = 20              # issue 13: at least 20 A/A and 20 slowed-down decisions
SLOWDOWN = 0.20
QUICK_RUN_MINUTES = 0.7     # one run on the 2-core CPU box (40-42 s measured), for the estimate
# Only the gated configurations: the whole quick tier also times augmentation and the harness,
# which write no rows the gate reads (about 3 minutes a run instead of about 1 on the CPU box).
BENCH_ARGS = [*paired_runs.DEFAULT_ARGS, *paired_runs.FIXED_ARGS]


def _run_dirs(root: Path) -> list[Path]:
    """The runs under root: directories of rows whose session finished (a `.finished` file,
    paired_runs.FINISHED); runs measured before sessions were marked have none, so in a set
    without any mark every directory of rows counts."""
    if not root.is_dir():
        return []
    runs = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))
    marked = [p for p in runs if paired_runs.finished(p)]
    return marked if marked else runs


def schedule(out: Path, baseline: int, current: int, decisions: int,
             pairs: int | None = None) -> list[tuple[Path, bool]]:
    """(results directory, slowed down) for every run of the measurement, in order."""
    if pairs:
        # Paired design: per slot two plain runs (an A/A pair) and one slowed run next to one
        # of them (a slowed pair), the slowed run last in even slots and first in odd ones,
        # so that neither side of a slowed pair always runs first.
        order = []
        for k in range(decisions * pairs):
            slot = [("plain", 2 * k, False), ("plain", 2 * k + 1, False)]
            order += slot + [("slow", k, True)] if k % 2 == 0 else [("slow", k, True)] + slot
    else:
        # The baseline first (as in CI, it predates the change), then plain and slowed-down
        # runs alternately: a drift of the machine during the hours this takes then touches
        # both kinds alike, and a measurement stopped early still leaves as many decisions of
        # each kind.
        order = [("baseline", i, False) for i in range(baseline)]
        for i in range(decisions * current):
            order += [("plain", i, False), ("slow", i, True)]
    return [(out / name / f"{i:03d}", slow) for name, i, slow in order]


def plan(out: Path, baseline: int, current: int, decisions: int,
         pairs: int | None = None) -> list[tuple[Path, bool]]:
    """(results directory, slowed down) for every run still to be measured."""
    return [(run_dir, slow) for run_dir, slow in schedule(out, baseline, current, decisions, pairs)
            if not paired_runs.finished(run_dir)]


def host_change(out: Path, pairs: int | None, done: int) -> tuple[str, bool] | None:
    """When the finished runs under `out` come from other hardware than this machine (a
    shared box's host can change between sessions): the message, and whether measuring may
    go on here. A paired measurement may, at a decision boundary (`done`, the runs finished,
    a multiple of 3 x pairs): every decision then stays on one machine, and `analyze` names
    each decision's machine. Inside a decision it may not (the gate refuses a decision whose
    runs span two machines), nor in the baseline layout, whose decisions all share the
    baseline."""
    # each set's runs are numbered in the order they ran: its last one is its latest
    latest = [dirs[-1] for kind in ("baseline", "plain", "slow")
              if (dirs := _run_dirs(out / kind))]
    if not latest:
        return None
    last = max(_rows(latest), key=lambda r: r["run_id"])["machine"]
    here = machine_fingerprint()
    why = hardware_difference(last, here)
    if why is None:
        return None
    what = (f"the runs under {out} so far were measured on {host_label(last)} (id {last['id']}), "
            f"this machine is {host_label(here)} (id {here['id']}): {why}")
    if pairs:
        begun = done % (3 * pairs)   # runs of the unfinished decision (3 runs a slot, schedule)
        if begun == 0:
            return (f"note: {what}; measuring goes on here from a decision boundary, so each "
                    f"decision stays on one machine (`analyze` says which)", True)
        return (f"error: {what}; the next {3 * pairs - begun} run(s) finish a decision begun "
                f"there, and the gate refuses a decision whose runs span two machines: finish "
                f"it on that machine, or move the last {begun} finished run(s) out of {out} to "
                f"begin that decision afresh here", False)
    return (f"error: {what}; every decision of this layout is gated against the baseline "
            f"measured there: measure into a new --out here", False)


def measure(args) -> int:
    todo = plan(args.out, args.baseline, args.current, args.decisions, args.pairs)
    done = len(schedule(args.out, args.baseline, args.current, args.decisions, args.pairs)) \
        - len(todo)
    change = host_change(args.out, args.pairs, done)
    if change:
        message, go_on = change
        print(message, file=sys.stderr, flush=True)
        if not go_on:
            return 2
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
        code = paired_runs.run_session(command, run_dir, args.out, ROOT, env)  # the suite's rootdir
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
            current_rows = _rows(group)
            try:
                gate = run_gate(baseline, current_rows)
            except GateInputError as exc:
                raise SystemExit(f"error: {exc}") from None
            results.append(_decision("A/A" if kind == "plain" else "slowed", gate,
                                     len(baseline_dirs), len(group),
                                     f"{group[0].name}-{group[-1].name}",
                                     current_rows[0]["machine"]))
    return results


def _timeline(out: Path) -> list[tuple[str, Path]]:
    """(kind, run directory) of every plain and slowed run, in the order they started (a
    run id begins with its UTC start time)."""
    runs = []
    for kind in ("plain", "slow"):
        for d in _run_dirs(out / kind):
            runs.append((min(r["run_id"] for r in read_rows([d])), kind, d))
    return [(kind, d) for _, kind, d in sorted(runs)]


def pairs_of(out: Path) -> dict[str, list[tuple[Path, Path]]]:
    """(baseline, current) run directories of every A/A pair (consecutive plain runs: 0-1,
    2-3, ...) and every slowed pair (a slowed run and the plain run next to it: before it when
    that one is not taken, else after it), in time order. Fits both `measure` layouts.

    Which run of an A/A pair is the baseline is balanced, as paired_runs.py's B C, C B order
    balances it in CI: with one side always the earlier run, any effect of running second (a
    warmer cache, a machine slowing through the job) would read as a change between identical
    builds. It changes every two pairs, not every pair: in the paired layout's slots (p p s,
    s p p) that also balances which side sits in a slot's middle; with a change every pair the
    current run was always the middle one, and on the CPU box one configuration (TensorFlow
    LeNet training) ran slower there in 25 of 30 pairs. (The slowed pairs alternate by the
    `measure` layout.)"""
    timeline = _timeline(out)
    plain = [d for kind, d in timeline if kind == "plain"]
    aa = [(plain[i], plain[i + 1]) if (i // 4) % 2 == 0 else (plain[i + 1], plain[i])
          for i in range(0, len(plain) - 1, 2)]
    slowed, taken = [], set()
    for t, (kind, d) in enumerate(timeline):
        if kind != "slow":
            continue
        for u in (t - 1, t + 1):
            if 0 <= u < len(timeline) and timeline[u][0] == "plain" and u not in taken:
                taken.add(u)
                slowed.append((timeline[u][1], d))
                break
    return {"A/A": aa, "slowed": slowed}


def paired_decisions(out: Path, pairs: int) -> list[dict]:
    """Every paired gate decision the runs allow: disjoint groups of `pairs` consecutive pairs
    of each kind, gated with `--paired` (first member of each pair as the baseline)."""
    results = []
    for kind, found in pairs_of(out).items():
        for start in range(0, len(found) - pairs + 1, pairs):
            group = found[start:start + pairs]
            current_rows = _rows([b for _, b in group])
            try:
                gate = run_gate(_rows([a for a, _ in group]), current_rows, paired=True)
            except GateInputError as exc:
                raise SystemExit(f"error: {exc}") from None
            # the runs a decision spans: both sides of A/A pairs, the slowed runs of the others
            spanned = sorted(d for pair in group for d in pair
                             if kind == "A/A" or d.parent.name == "slow")
            results.append(_decision(kind, gate, len(group), len(group),
                                     f"{spanned[0].parent.name}/{spanned[0].name}-"
                                     f"{spanned[-1].parent.name}/{spanned[-1].name}",
                                     current_rows[0]["machine"]))
    return results


def _decision(kind: str, gate, baseline_runs: int, current_runs: int, runs: str,
              machine: dict) -> dict:
    """One decision's figures. `machine` is the fingerprint of its runs (the gate has
    checked that both sides share the hardware)."""
    suite = [v for v in gate.verdicts if is_suite(v.config)]
    return {"kind": kind, "exit": gate.exit_code, "baseline runs": baseline_runs,
            "machine": machine["id"], "host": host_label(machine),
            "current runs": current_runs, "regressions": gate.count(REGRESSION),
            "cannot resolve": gate.count(CANNOT_RESOLVE), "configurations": len(gate.verdicts),
            "suite": suite[0].outcome if suite else "-", "runs": runs,
            "allowed": [v.allowed_drop for v in gate.verdicts
                        if v.allowed_drop and not is_suite(v.config)],
            "suite allowed": [v.allowed_drop for v in suite if v.allowed_drop],
            "spread": [v.spread for v in gate.verdicts if v.spread and not is_suite(v.config)],
            "suite spread": [v.spread for v in suite if v.spread]}


def _median_text(values) -> str:
    values = sorted(values)
    return f"{values[len(values) // 2]:.1%}" if values else "-"


def _summary_line(label: str, what: str, chosen: list[dict], paired: bool) -> str:
    alarms = sum(r["exit"] == EXIT_REGRESSION for r in chosen)
    unresolved = sum(r["exit"] == EXIT_CANNOT_RESOLVE for r in chosen)
    suite = sum(r["suite"] == REGRESSION for r in chosen)
    runs = (f"{chosen[0]['current runs']} pairs" if paired else
            f"{chosen[0]['baseline runs']} baseline and {chosen[0]['current runs']} current "
            f"runs")
    return (f"{label}: {alarms} of {len(chosen)} {what}; {unresolved} cannot resolve; "
            f"{runs} per decision; suite score flagged in {suite}; median allowed "
            f"drop {_median_text(a for r in chosen for a in r['allowed'])} "
            f"(configurations), "
            f"{_median_text(a for r in chosen for a in r['suite allowed'])} (suite); "
            f"median spread {_median_text(x for r in chosen for x in r['spread'])} "
            f"(configurations), "
            f"{_median_text(x for r in chosen for x in r['suite spread'])} (suite)")


def summary_lines(results: list[dict], paired: bool = False) -> list[str]:
    """A line per kind of decision; where the runs come from several machines (the host of
    a shared CPU box can change between sessions), also a line per kind and machine: the
    counts of decisions add up across machines, the spreads and allowed drops are each
    machine's own and are not to be pooled."""
    machines = list(dict.fromkeys(r["machine"] for r in results))
    lines = []
    for kind, what in (("A/A", "false alarms (exit 1)"), ("slowed", "detections (exit 1)")):
        chosen = [r for r in results if r["kind"] == kind]
        if not chosen:
            lines.append(f"{kind}: no decisions")
            continue
        lines.append(_summary_line(kind, what, chosen, paired))
        if len(machines) > 1:
            lines += [_summary_line(f"{kind} on machine {m}", what,
                                    [r for r in chosen if r["machine"] == m], paired)
                      for m in machines if any(r["machine"] == m for r in chosen)]
    return lines


def analyze(args) -> int:
    paired = bool(args.pairs)
    results = paired_decisions(args.out, args.pairs) if paired else decisions(args.out, args.current)
    headers = ["decision", "kind", "runs used", "baseline runs", "current runs",
               "configurations", "regressions", "cannot resolve", "suite score", "exit"]
    rows = [[str(i + 1), r["kind"], r["runs"], str(r["baseline runs"]), str(r["current runs"]),
             str(r["configurations"]), str(r["regressions"]), str(r["cannot resolve"]),
             r["suite"], str(r["exit"])] for i, r in enumerate(results)]
    align = ["right", "left", "left"] + ["right"] * 5 + ["left", "right"]
    hosts = dict((r["machine"], r["host"]) for r in results)
    if len(hosts) > 1:   # say which machine each decision ran on
        headers.insert(3, "machine")
        align.insert(3, "left")
        for row, r in zip(rows, results):
            row.insert(3, r["machine"])
    print(Table(headers, rows, align).markdown())
    print()
    if len(hosts) > 1:
        for machine, host in hosts.items():
            print(f"machine {machine}: {host}")
        print()
    for line in summary_lines(results, paired):
        print(line)
    return 0


MEDIAN_EFFICIENCY = 1.2533   # sd of a median of n normal values = 1.2533 x sd / sqrt(n)


def _round_noise(runs: list[list[dict]]) -> tuple[dict, list[list]]:
    """From the plain runs' rows (one list a run): per configuration the standard deviation of a run's median
    that its own rounds imply (1.2533 x the rounds' sd of logs / sqrt(rounds), as for
    independent normal rounds), averaged over the runs; and each run's configurations in the
    order they were timed."""
    noise, order = {}, []
    for run_rows in runs:
        rows = sorted((r for r in run_rows if r["kind"] == "throughput"
                       and r["status"] == "ok"), key=lambda r: r["created"])
        order.append([Config.of(r) for r in rows])
        for r in rows:
            logs = [math.log(x) for x in r["images_per_s"]]
            noise.setdefault(Config.of(r), []).append(
                MEDIAN_EFFICIENCY * statistics.stdev(logs) / math.sqrt(len(logs)))
    return {c: statistics.mean(v) for c, v in noise.items()}, order


def drift(args) -> int:
    """Per configuration: the plain runs' median against the baseline's, over the whole
    measurement and per third of it (in run order), the spread of the plain runs, that
    spread once each run's common factor (the mean over its configurations of the log ratio
    to the baseline) is taken out, and the part of it a run's own rounds explain. A rank test
    assumes the runs of both sides exchangeable; a drift after the baseline breaks that. A
    large common share is what pairing cancels; what is left beyond the rounds' share, if
    configurations timed one after the other do not share it, is a level each process draws
    for each configuration: more rounds do not narrow it, more runs do."""
    def medians(rows):
        return {c: m.run_medians[0] for c, m in measurements(rows).items() if m.run_medians}
    base = {}
    for d in _run_dirs(args.out / "baseline"):
        for c, x in medians(read_rows([d])).items():
            base.setdefault(c, []).append(x)
    # each plain run's rows, read once: its medians, and its rounds for _round_noise
    complete = [(rows, run) for rows in (read_rows([d]) for d in _run_dirs(args.out / "plain"))
                for run in [medians(rows)] if set(base) <= set(run)]
    plain_rows, plain = [rows for rows, _ in complete], [run for _, run in complete]
    refs = {c: statistics.median(b) for c, b in base.items()}
    common = [statistics.mean(math.log(run[c] / refs[c]) for c in refs) for run in plain]
    rounds_share, timed = _round_noise(plain_rows)
    residuals, rows = {}, []
    for c, ref in refs.items():
        p = [run[c] for run in plain]
        if len(p) < 3:
            continue
        k = len(p) // 3
        thirds = [statistics.median(p[i * k:(i + 1) * k]) / ref for i in range(3)]
        residuals[c] = [math.log(x / ref) - f for x, f in zip(p, common)]
        rows.append([c.framework, c.arch, c.phase, str(len(base[c])), str(len(p)),
                     f"{statistics.median(p) / ref:.3f}", " / ".join(f"{t:.3f}" for t in thirds),
                     f"{statistics.stdev(math.log(x) for x in p):.1%}",
                     f"{statistics.stdev(residuals[c]):.1%}", f"{rounds_share[c]:.1%}"])
    print(Table(["framework", "arch", "phase", "baseline runs", "plain runs",
                 "plain / baseline (median)", "per third, in run order",
                 "plain runs' spread (sd of logs)", "without the run's common factor",
                 "a run median's sd from its rounds"], rows,
                ["left"] * 3 + ["right"] * 7).markdown())
    # Configurations timed one after the other (neighbours in the first run's order, which
    # every run followed) share a burst of load that lasts longer than one configuration.
    order = [c for c in timed[0] if c in residuals] if timed else []
    pairs = [(a, b) for a, b in zip(order, order[1:])]
    if pairs and len(plain) >= 3:
        r = statistics.mean(statistics.correlation(residuals[a], residuals[b]) for a, b in pairs)
        print(f"\nneighbours in timing order: mean correlation of their residuals {r:+.2f} "
              f"({len(pairs)} neighbour pairs, {len(plain)} plain runs)")
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
        p.add_argument("--pairs", type=int, metavar="N",
                       help="paired design (`gate --paired`): N pairs per decision, each pair a "
                            "baseline and a current run measured one after the other")
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
