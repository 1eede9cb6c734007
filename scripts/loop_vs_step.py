"""The recipe loop against the benchmark's bare step, side by side in one process.

    python scripts/loop_vs_step.py --data PATH                     # every framework x recipe
    python scripts/loop_vs_step.py --data PATH --framework torch --recipe lenet_sgd --rounds 5

For each framework and recipe, alternating round by round on one model: the suite's training
loop (`fit_epoch` over N real training images in a shuffled order, timed as twinbench/train.py
times an epoch, i.e. what a result row's images/s measures) and the benchmark tier's training
step of the same architecture, mode and batch size (twinbench/bench.py `make_step`: one batch
resident on the device, stepped N / batch times). The loop adds the data order, the batch
gather and the framework's own loop machinery (Keras's `fit`; a Python loop in torch); the
ratio says what that costs. The architecture's benchmark recipe is the one trained
(recipes.for_arch), so both sides run the same optimizer. Each framework runs in a process
of its own. Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from twinbench.imports import preload  # noqa: E402

preload()   # torch and torchvision before TensorFlow (docs/methodology.md#import-order)

from tabulate import tabulate  # noqa: E402

import models  # noqa: E402
from twinbench.bench import first_call_s, make_step  # noqa: E402
from twinbench.data import load_split, resolve_source  # noqa: E402
from twinbench.frameworks import framework_class, get_framework  # noqa: E402
from twinbench.frameworks.modes import default_mode  # noqa: E402
from twinbench.frameworks.reference_programs import subset  # noqa: E402
from twinbench.imports import FRAMEWORKS  # noqa: E402
from twinbench.recipes import RECIPES, for_arch  # noqa: E402
from twinbench.train import epoch_order  # noqa: E402

BENCH_RECIPES = sorted({for_arch(a).name for a in models.ARCHITECTURES})


def measure(fw_name: str, recipe, train_set, rounds: int) -> tuple[list[float], list[float]]:
    """(loop img/s per round, step img/s per round) for one framework and recipe."""
    framework = get_framework(fw_name, "cpu")
    arch = models.get(recipe.arch)
    n = len(train_set.labels)
    model = framework.build(arch, seed=0)
    optimizer = framework.make_optimizer(model, recipe)
    data = framework.prepare_data(model, recipe.prepare(train_set.images), train_set.labels)
    step = make_step(framework, arch, default_mode(fw_name, "cpu"), "train", recipe.batch_size)
    steps = n // recipe.batch_size
    loop_rates, step_rates = [], []
    with framework.recipe_settings(recipe):
        # untimed: the loop's first batches trace its train function; the step's first call too
        framework.fit_epoch(model, optimizer, data, recipe.batch_size,
                            epoch_order(0, 0, n)[:4 * recipe.batch_size])
        first_call_s(step)
        for r in range(rounds):
            framework.synchronize()
            t0 = time.perf_counter()
            framework.fit_epoch(model, optimizer, data, recipe.batch_size, epoch_order(0, r + 1, n))
            framework.synchronize()
            loop_rates.append(n / (time.perf_counter() - t0))
            step.sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                step.run()
            step.sync()
            step_rates.append(steps * recipe.batch_size / (time.perf_counter() - t0))
            print(f"{fw_name}/{recipe.name} round {r + 1}/{rounds}: loop {loop_rates[-1]:,.0f} "
                  f"img/s, step {step_rates[-1]:,.0f} img/s", flush=True)
    step.close()
    return loop_rates, step_rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("TWINBENCH_DATA"),
                   help="CIFAR-10 location (as pytest --data; env TWINBENCH_DATA)")
    p.add_argument("--framework", action="append", choices=FRAMEWORKS)
    p.add_argument("--recipe", action="append", choices=BENCH_RECIPES,
                   help="an architecture's benchmark recipe (default: all)")
    p.add_argument("--images", type=int, default=8_000, help="training images per loop round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    if args.images < 64 or args.rounds < 1 or args.threads < 1:
        p.error("need --images >= 64, --rounds >= 1 and --threads >= 1")
    frameworks = args.framework or list(FRAMEWORKS)
    if len(frameworks) > 1:
        # one process per framework: a framework loaded (and its thread pools started) beside
        # the other must not slow the other's figures
        common = [f"--images={args.images}", f"--rounds={args.rounds}",
                  f"--threads={args.threads}", *(f"--recipe={r}" for r in args.recipe or ()),
                  *([f"--data={args.data}"] if args.data else [])]
        codes = [subprocess.call([sys.executable, __file__, f"--framework={fw}", *common])
                 for fw in frameworks]
        return max(codes)
    source = resolve_source(args.data, download=args.data is None)
    train_all = load_split(source, "trainval")
    n = min(args.images, len(train_all.labels))
    train_set = subset(train_all, n)
    rows = []
    for fw_name in frameworks:
        framework_class(fw_name).configure(args.threads, determinism=False)
        for name in args.recipe or BENCH_RECIPES:
            loop, step = measure(fw_name, RECIPES[name], train_set, args.rounds)
            lm, sm = statistics.median(loop), statistics.median(step)
            rows.append([fw_name, name, RECIPES[name].batch_size, default_mode(fw_name, "cpu"),
                         f"{lm:,.0f}", f"{sm:,.0f}", f"{lm / sm:.0%}"])
    print()
    print(tabulate(rows, headers=["framework", "recipe", "batch", "step mode", "loop img/s",
                                  "bare step img/s", "loop / step"],
                   tablefmt="github", disable_numparse=True))
    print(f"\nmedians of {args.rounds} alternating round(s), {n:,} images per loop round, "
          f"{args.threads} threads; data {source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
