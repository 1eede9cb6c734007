"""Seeds on co-located xdist workers against the same seeds run one after another, side by side.

    python scripts/workers_vs_threads.py --data PATH                  # both reference recipes
    python scripts/workers_vs_threads.py --data PATH --recipe lenet_sgd --seeds 4 --out DIR

For each recipe, the accuracy tier is run twice over the same seeds, one session right after
the other: serially in one process with every core (`--threads CORES`), then on CORES xdist
workers with one thread each (`-n CORES --threads 1`). The table gives each session's wall
clock (pytest start to exit: imports, data loading and evaluation included, as a user waits
for it), the ratio serial / parallel (above 1: the workers finish the seeds sooner) and the
median training seconds per run from the rows. Small per-op-bound steps (LeNet at batch 4)
gain nothing from a second thread and should approach CORES x; large convolutions already
use every core in the serial run and gain little. Run it on a quiet machine; the rows land
under --out (default: a temporary directory) and are not a measurement of accuracy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tabulate import tabulate  # noqa: E402

from twinbench.recipes import RECIPES  # noqa: E402
from twinbench.results import read_rows  # noqa: E402

REFERENCE_RECIPES = ("keras_cnn_adam", "lenet_sgd")


def session_command(recipe: str, seeds: int, cores: int, parallel: bool, results: Path,
                    data: str | None) -> list[str]:
    """The pytest command line of one session: serial on every core, or one worker a core."""
    spread = ["-n", str(cores), "--threads", "1"] if parallel else ["--threads", str(cores)]
    return [sys.executable, "-m", "pytest", "-m", "accuracy", "--device", "cpu", "-q",
            "--recipe", recipe, "--seeds", str(seeds), *spread, f"--results={results}",
            *([f"--data={data}"] if data else []), "-p", "no:cacheprovider"]


def train_seconds(results: Path) -> list[float]:
    """Training seconds of every accuracy row a session wrote."""
    return [r["train_seconds"] for r in read_rows([results]) if r["kind"] == "accuracy"]


def table_row(recipe: str, seeds: int, serial: dict, parallel: dict) -> list[str]:
    """One line of the table from the two sessions' {wall, runs, train, rc}."""
    def runs(s):
        return f"{len(s['train'])}" + ("" if s["rc"] == 0 else f" (pytest exit {s['rc']})")

    def train(s):
        return f"{statistics.median(s['train']):,.0f}" if s["train"] else "-"
    return [recipe, str(seeds), runs(serial), runs(parallel), f"{serial['wall']:,.0f}",
            f"{parallel['wall']:,.0f}", f"{serial['wall'] / parallel['wall']:.2f}x",
            train(serial), train(parallel)]


HEADERS = ["recipe", "seeds", "runs serial", "runs parallel", "serial wall s",
           "parallel wall s", "serial / parallel", "train s per run, serial (median)",
           "train s per run, parallel (median)"]


def run_session(command: list[str], results: Path) -> dict:
    print("$", " ".join(command), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.call(command, cwd=ROOT)
    wall = time.perf_counter() - t0
    return {"wall": wall, "rc": rc, "train": train_seconds(results) if results.exists() else []}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("TWINBENCH_DATA"),
                   help="CIFAR-10 location (as pytest --data; env TWINBENCH_DATA)")
    p.add_argument("--recipe", action="append", choices=sorted(RECIPES),
                   help=f"default: {', '.join(REFERENCE_RECIPES)}")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--cores", type=int, default=os.cpu_count(),
                   help="workers in the parallel session, threads in the serial one")
    p.add_argument("--out", type=Path, help="where the sessions' rows go (default: a temp dir)")
    args = p.parse_args(argv)
    if args.seeds < 2 or args.cores < 2:
        p.error("need --seeds >= 2 and --cores >= 2: one seed or one core has nothing to spread")
    out = args.out or Path(tempfile.mkdtemp(prefix="workers-vs-threads-"))
    lines, worst = [], 0
    for recipe in args.recipe or REFERENCE_RECIPES:
        sessions = {}
        for parallel in (False, True):
            results = out / f"{recipe}-{'parallel' if parallel else 'serial'}"
            sessions[parallel] = run_session(
                session_command(recipe, args.seeds, args.cores, parallel, results, args.data),
                results)
            worst = max(worst, sessions[parallel]["rc"])
        lines.append(table_row(recipe, args.seeds, sessions[False], sessions[True]))
    print()
    print(tabulate(lines, headers=HEADERS, tablefmt="github", disable_numparse=True))
    print(f"\nserial: --threads {args.cores}; parallel: -n {args.cores} --threads 1; "
          f"rows under {out}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
