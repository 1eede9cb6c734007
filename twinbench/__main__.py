"""The main job: `python -m twinbench compare` (what `tox -e compare` runs).

It measures both frameworks on this machine's devices, accuracy (the reference recipes) and
throughput (the benchmark tier), in a pytest process of its own, then renders the report from
the saved result rows in a second process. Each step's command is printed, so any part can be
rerun by hand; a failed gate still gets its report, and the job's exit code is pytest's.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="accuracy and throughput of both frameworks here, "
                                             "then the report")
    compare.add_argument("--quick", action="store_true",
                         help="throughput: one batch size, few rounds; accuracy: unchanged")
    compare.add_argument("--no-accuracy", action="store_true",
                         help="throughput only (the accuracy runs take most of an hour on a CPU)")
    compare.add_argument("--results", type=Path, default=None,
                         help="results directory (default: reports/results/compare-<run id>)")
    compare.add_argument("--out", type=Path, default=ROOT / "reports" / "out",
                         help="where the rendered report goes (default: reports/out)")
    compare.add_argument("pytest_args", nargs=argparse.REMAINDER,
                         help="anything after -- goes to pytest (e.g. -- --device cpu --data PATH)")
    args = parser.parse_args(argv)

    from twinbench.results import new_run_id
    run_id = new_run_id()
    results = args.results or ROOT / "reports" / "results" / f"compare-{run_id}"
    marker = "benchmark" if args.no_accuracy else "accuracy or benchmark"
    extra = [a for a in args.pytest_args if a != "--"]
    # "--results=DIR", one word: see run.sh on how pytest finds its root directory.
    test = [sys.executable, "-m", "pytest", "-m", marker, f"--results={results}", "-p",
            "no:cacheprovider", *(["--quick"] if args.quick else []), *extra]
    render = [sys.executable, "-m", "reports", "render", str(results), "--out", str(args.out)]

    env = dict(os.environ, TWINBENCH_RUN_ID=run_id)
    print("twinbench compare:", " ".join(test), flush=True)
    code = subprocess.call(test, cwd=ROOT, env=env)
    if not results.is_dir() or not any(results.glob("*.json")):
        print(f"twinbench compare: no result rows in {results}; nothing to render "
              f"(pytest exit code {code})", file=sys.stderr)
        return code or 1
    print("twinbench compare:", " ".join(render), flush=True)
    render_code = subprocess.call(render, cwd=ROOT)
    print(f"twinbench compare: report in {args.out / 'report.md'} and {args.out / 'report.html'}")
    return code or render_code


if __name__ == "__main__":
    sys.exit(main())
