"""Measure a baseline commit and the working tree in interleaved pairs, for `python -m reports
gate --paired` (docs/methodology.md#regression-gate).

    python scripts/paired_runs.py --baseline-ref origin/main --out DIR --pairs 10
    python -m reports gate --paired --baseline DIR/baseline --current DIR/current

The baseline commit is checked out once into DIR/baseline-tree (`git worktree`); then PAIRS
times a benchmark session of each build, the order alternating B C, C B, B C, ... so that a
machine that drifts during the job touches both sides alike. Each session is one run (its
own run id) in DIR/baseline/NNN or DIR/current/NNN; a finished run (its session exited 0: a
`.finished` file beside its rows) is kept, so the command resumes where it stopped, and the
partial rows of a session that failed or was stopped move to DIR/unfinished/ first. Both
builds run in this Python environment: a baseline whose requirements differ from the working
tree's is measured with the working tree's packages.

Default sessions: the quick tier's gated throughput items on the CPU
(`suites/test_throughput.py::test_throughput -m benchmark --quick --device cpu`); pass other
pytest arguments after `--` (for instance `-- -m benchmark --quick --device gpu`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARGS = ["suites/test_throughput.py::test_throughput", "-m", "benchmark", "--quick",
                "--device", "cpu"]
FIXED_ARGS = ["-p", "no:cacheprovider", "-q"]


def order(pairs: int) -> list[tuple[str, int]]:
    """(side, pair index) in measuring order: B C, C B, B C, ..."""
    out = []
    for k in range(pairs):
        sides = ("baseline", "current") if k % 2 == 0 else ("current", "baseline")
        out += [(side, k) for side in sides]
    return out


FINISHED = ".finished"   # written into a run's directory once its pytest session exits 0


def finished(run_dir: Path) -> bool:
    return (run_dir / FINISHED).is_file()


def prepare(run_dir: Path, out: Path) -> None:
    """Before a run: rows left in its directory by a session that failed or was stopped are
    partial (some configurations, not all), so they move to OUT/unfinished/ (kept, never
    gated) and the run starts afresh."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        aside = out / "unfinished" / f"{run_dir.parent.name}-{run_dir.name}-{time.time_ns()}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(aside)
        print(f"  an unfinished run's rows moved to {aside}", flush=True)


def run_session(command: list[str], run_dir: Path, out: Path, cwd: Path, env: dict) -> int:
    """One benchmark session into run_dir; marked finished when pytest exits 0."""
    prepare(run_dir, out)
    start = time.monotonic()
    code = subprocess.run(command, cwd=cwd, env=env).returncode
    print(f"  exit {code} after {time.monotonic() - start:.0f} s", flush=True)
    if code == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / FINISHED).write_text(f"pytest exit 0 after {time.monotonic() - start:.0f} s\n")
    return code


def baseline_tree(out: Path, ref: str, dry_run: bool) -> Path:
    """The baseline commit checked out beside the results (once; reused when resuming)."""
    tree = out / "baseline-tree"
    if tree.is_dir():
        return tree
    command = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref]
    print(" ".join(command), flush=True)
    if not dry_run:
        subprocess.run(command, check=True)
    return tree


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", required=True,
                        help="the commit (or branch, tag) to compare the working tree with")
    parser.add_argument("--out", type=Path, required=True, help="results directory")
    parser.add_argument("--pairs", type=int, default=10,
                        help="pairs of runs (default: %(default)s; docs/methodology.md"
                             "#regression-gate says how many a machine needs)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("pytest_args", nargs="*", help="pytest arguments, after --")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if not args.dry_run:
        check = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                f"{args.baseline_ref}^{{commit}}"], capture_output=True)
        if check.returncode != 0:
            print(f"error: --baseline-ref {args.baseline_ref!r} is not a commit of this "
                  f"repository (fetch it first?)", file=sys.stderr)
            return 2
    out = args.out.resolve()
    tree = baseline_tree(out, args.baseline_ref, args.dry_run)
    pytest_args = args.pytest_args or DEFAULT_ARGS
    todo = [(side, k) for side, k in order(args.pairs)
            if not finished(out / side / f"{k:03d}")]
    print(f"{len(todo)} run(s) to go of {2 * args.pairs}", flush=True)
    for side, k in todo:
        run_dir = out / side / f"{k:03d}"
        cwd = tree if side == "baseline" else ROOT
        command = [sys.executable, "-m", "pytest", *pytest_args, *FIXED_ARGS,
                   f"--results={run_dir}"]
        print(f"[{side} {k + 1}/{args.pairs}] (in {cwd}) {' '.join(command)}", flush=True)
        if args.dry_run:
            continue
        code = run_session(command, run_dir, out, cwd, dict(os.environ))
        if code != 0:
            print(f"error: the {side} run failed (exit {code}); fix it and rerun this command "
                  f"(finished runs are kept)", file=sys.stderr)
            return 2
    if not args.dry_run:
        print(f"next: python -m reports gate --paired --baseline {out / 'baseline'} "
              f"--current {out / 'current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
