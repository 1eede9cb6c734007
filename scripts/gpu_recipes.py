"""The two torch recipes, trained to completion on one device, timed, and written as rows.

On a GPU this is the issue's target check: keras_cnn_adam and lenet_sgd, 10 epochs each, data
resident on the device, with `graph_steps` training steps per CUDA-graph replay (targets on
an H100: at most 5 s and 12 s), then the eager loop of keras_cnn_adam for comparison. The same
code runs on a CPU for a dry run (`--device cpu --images 2000 --epochs 1`).

    python scripts/gpu_recipes.py --data PATH --results DIR [--eager] [--graph-steps 50]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from twinbench import imports  # noqa: E402

imports.preload()

from twinbench import thresholds  # noqa: E402
from twinbench.frameworks import reference_programs as reference  # noqa: E402
from twinbench.data import load_split, resolve_source  # noqa: E402
from twinbench.fingerprint import machine_fingerprint  # noqa: E402
from twinbench.frameworks import get_framework  # noqa: E402
from twinbench.recipes import RECIPES  # noqa: E402
from twinbench.results import common_fields, new_run_id, write_row  # noqa: E402
from twinbench.train import train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("TWINBENCH_DATA"))
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--recipe", action="append", choices=list(RECIPES))
    p.add_argument("--graph-steps", type=int, default=50, help="0: the eager loop only")
    p.add_argument("--eager", action="append", default=[], choices=list(RECIPES),
                   help="also train this recipe with the eager loop, for comparison")
    p.add_argument("--epochs", type=int, default=None, help="override (dry runs)")
    p.add_argument("--images", type=int, default=None, help="training images (dry runs)")
    args = p.parse_args(argv)

    source = resolve_source(args.data, download=args.data is None, progress=print)
    train_set, test_set = load_split(source, "trainval"), load_split(source, "test")
    if args.images:
        train_set = reference.subset(train_set, args.images)
    framework = get_framework("torch", args.device)
    run_id = new_run_id()
    machine = machine_fingerprint()   # once: it asks git and nvidia-smi
    plan = [(name, args.graph_steps) for name in (args.recipe or RECIPES)]
    plan += [(name, 0) for name in args.eager]
    for name, graph_steps in plan:
        recipe = RECIPES[name]
        if args.epochs:
            recipe = dataclasses.replace(recipe, epochs=args.epochs)
        framework.graph_steps = graph_steps
        try:
            gate = thresholds.threshold(source.name, name)
        except thresholds.NoThreshold:
            gate = None
        t0 = time.perf_counter()
        run = train(framework, recipe, train_set, test_set, seed=0, threshold=gate, progress=print)
        wall = time.perf_counter() - t0
        row = run.row(len(train_set.labels), source)
        write_row(args.results, {**common_fields(run_id, False, machine), **row})
        loop = f"{graph_steps} steps per CUDA graph" if graph_steps and args.device == "gpu" else "eager"
        print(f"RESULT {name} ({loop}): final accuracy {run.final_accuracy:.2%}, "
              f"training {run.train_seconds:.1f} s ({run.images_per_s(len(train_set.labels)):,.0f} "
              f"img/s), time to {gate if gate is None else f'{gate:.1%}'}: "
              f"{run.time_to_threshold_s}, wall with evaluation and capture {wall:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
