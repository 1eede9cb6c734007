"""Resident memory of one process after each of several training runs, as a worker sees it.

    python scripts/memory_per_run.py --data PATH --framework tf --recipe resnet8_short
    python scripts/memory_per_run.py --data PATH --framework torch --images 5000 --runs 4

An xdist worker trains one run after another in one process; whatever a run leaves behind
adds up over a many-seed session. This trains `--runs` short runs (the recipe cut to
`--epochs` epochs on `--images` training images, seeds 0, 1, ...) through the suite's own
`twinbench.train.train`, releases them as the accuracy tier does, and prints the process's
resident memory (VmRSS) before the first and after each. A level that keeps rising after the
first run is memory the adapter does not give back. Linux only (reads /proc/self/status).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from twinbench.imports import FRAMEWORKS, preload  # noqa: E402

preload()   # torch and torchvision before TensorFlow (docs/methodology.md#import-order)

from tabulate import tabulate  # noqa: E402

from twinbench.data import load_split, resolve_source  # noqa: E402
from twinbench.frameworks import framework_class, get_framework  # noqa: E402
from twinbench.frameworks.reference_programs import subset  # noqa: E402
from twinbench.recipes import RECIPES  # noqa: E402
from twinbench.train import train  # noqa: E402

TEST_IMAGES = 1_000   # evaluation after each epoch is part of a run; a small test set keeps it short


def resident_mb() -> int:
    """This process's resident set size in MiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("TWINBENCH_DATA"),
                   help="CIFAR-10 location (as pytest --data; env TWINBENCH_DATA)")
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="resnet8_short")
    p.add_argument("--images", type=int, default=5_000, help="training images per run")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    if args.images < 64 or args.epochs < 1 or args.runs < 2 or args.threads < 1:
        p.error("need --images >= 64, --epochs >= 1, --runs >= 2 and --threads >= 1")
    if not os.path.exists("/proc/self/status"):
        p.error("reads /proc/self/status: Linux only")
    source = resolve_source(args.data, download=args.data is None)
    train_set = subset(load_split(source, "trainval"), args.images)
    test_set = subset(load_split(source, "test"), TEST_IMAGES)
    recipe = dataclasses.replace(RECIPES[args.recipe], epochs=args.epochs)
    framework_class(args.framework).configure(args.threads, determinism=False)
    framework = get_framework(args.framework, "cpu")
    before = resident_mb()
    lines = [["before the first run", f"{before:,}", "", ""]]
    for seed in range(args.runs):
        t0 = time.perf_counter()
        run = train(framework, recipe, train_set, test_set, seed=seed)
        del run
        framework.release_memory()
        now = resident_mb()
        lines.append([f"after run {seed + 1}", f"{now:,}", f"{now - before:+,}",
                      f"{time.perf_counter() - t0:.0f}"])
        before = now
    print(tabulate(lines, headers=["", "resident MiB", "change", "run s"], tablefmt="github",
                   disable_numparse=True))
    print(f"\n{args.framework}, {recipe.name} cut to {args.epochs} epoch(s), {len(train_set.labels):,} "
          f"training images, {args.threads} threads; data {source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
