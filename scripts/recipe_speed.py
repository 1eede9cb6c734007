"""Side-by-side speed of the suite's recipe loops against the reference programs.

For each reference recipe (keras_cnn_adam in TensorFlow, lenet_sgd in torch) it alternates,
round by round, the published program's loop (twinbench/frameworks/reference_programs.py) and the suite's
(twinbench/train.py) on the same images, then prints wall time per round, the ratio of the
medians, and the test accuracy each reached. Each side's time covers its whole job for the
epochs asked, its own evaluation included (the published TF program validates every epoch,
the torch one once at the end; the suite evaluates every epoch).

    python scripts/recipe_speed.py --data PATH                      # 10,000 images x 1 epoch, 2 rounds
    python scripts/recipe_speed.py --data PATH --images 50000 --epochs 10 --rounds 1   # full runs
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from twinbench import imports  # noqa: E402

imports.preload()   # torch and torchvision before TensorFlow, always

from tabulate import tabulate  # noqa: E402

from twinbench.frameworks import reference_programs as reference  # noqa: E402
from twinbench.data import load_split, resolve_source  # noqa: E402
from twinbench.frameworks import framework_class, get_framework  # noqa: E402
from twinbench.recipes import RECIPES  # noqa: E402
from twinbench.train import train  # noqa: E402

PAIRS = {"keras_cnn_adam": ("tf", reference.keras_tutorial_epochs),
         "lenet_sgd": ("torch", reference.torch_tutorial_epochs),
         "resnet8_mlperf_tiny": ("tf", reference.mlperf_tiny_epochs)}


def suite_run(framework, recipe, train_set, test_set, seed):
    t0 = time.perf_counter()
    run = train(framework, recipe, train_set, test_set, seed=seed)
    return time.perf_counter() - t0, run.final_accuracy


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("TWINBENCH_DATA"),
                   help="CIFAR-10 location (as pytest --data; env TWINBENCH_DATA)")
    p.add_argument("--recipe", action="append", choices=list(PAIRS))
    p.add_argument("--images", type=int, default=10_000, help="training images per round")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    if args.images < 1 or args.epochs < 1 or args.rounds < 1:
        p.error("--images, --epochs and --rounds must be >= 1")

    source = resolve_source(args.data, download=args.data is None)
    train_all, test_set = load_split(source, "trainval"), load_split(source, "test")
    train_set = reference.subset(train_all, min(args.images, len(train_all.labels)))
    framework_class("torch").configure(args.threads, determinism=False)   # as the suite pins it
    rows = []
    for name in args.recipe or PAIRS:
        fw_name, published = PAIRS[name]
        framework = get_framework(fw_name, "cpu")
        recipe = dataclasses.replace(RECIPES[name], epochs=args.epochs)
        ref_t, suite_t, ref_acc, suite_acc = [], [], None, None
        for r in range(args.rounds):
            t, ref_acc = published(train_set, test_set, epochs=args.epochs, seed=r)
            ref_t.append(t)
            t, suite_acc = suite_run(framework, recipe, train_set, test_set, seed=r)
            suite_t.append(t)
            print(f"{name} round {r + 1}/{args.rounds}: reference {ref_t[-1]:.1f} s, "
                  f"suite {suite_t[-1]:.1f} s", flush=True)
        n = len(train_set.labels) * args.epochs
        ref_m, suite_m = statistics.median(ref_t), statistics.median(suite_t)
        rows.append([name, fw_name, f"{n:,}", f"{ref_m:.1f}", f"{suite_m:.1f}",
                     f"{n / ref_m:,.0f}", f"{n / suite_m:,.0f}", f"{ref_m / suite_m:.2f}x",
                     f"{ref_acc:.2%}", f"{suite_acc:.2%}"])
    print()
    print(tabulate(rows, headers=["recipe", "framework", "images", "reference s", "suite s",
                                  "reference img/s", "suite img/s", "speed-up",
                                  "reference acc", "suite acc"], tablefmt="github"))
    print(f"\n{args.rounds} alternating round(s), median wall time per side, "
          f"{args.threads} threads, {args.epochs} epoch(s) on {len(train_set.labels):,} images; "
          f"data {source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
