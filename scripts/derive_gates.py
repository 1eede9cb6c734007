"""Accuracy gates derived from measured seeds (docs/methodology.md#seed-spread).

    python scripts/derive_gates.py reports/samples/cpu-box-seeds reports/samples/cpu-box-resnet8

Reads the accuracy-tier rows (not the matrix's) under the given directories, groups them by
data source, recipe and framework, and prints per group: the seeds, mean, sample std and its
95% upper bound; per data source the pooled seed std, the prior it rounds up to
(thresholds.SEED_STD_BY_SOURCE); and per recipe the threshold thresholds.derive_threshold
gives (the lowest over the frameworks it is gated in), beside the one in
twinbench/thresholds.py. Exit 1 when a table value disagrees with its derivation.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tabulate import tabulate  # noqa: E402

from twinbench import thresholds  # noqa: E402
from twinbench.results import read_rows  # noqa: E402

PRIOR_STEP = 0.001   # the prior is the pooled std rounded up to a tenth of a point


DROPS = (0.0, 0.02, 0.03, 0.05)   # regressions the table reports the CI gate's chance against


def _ci_fail(gate: thresholds.DerivedGate, threshold: float, drop: float) -> float:
    """Chance that one seed of the recipe as measured (its mean and std), less `drop`, fails."""
    return thresholds.fail_rate(gate.mean, gate.std, threshold, gate.prior, drop=drop)


def seed_groups(rows: list[dict]) -> dict[tuple[str, str, str], dict[int, float]]:
    """(source, recipe, framework) -> {seed: final accuracy} of the accuracy tier's rows."""
    groups: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in rows:
        if row.get("kind") != "accuracy" or row.get("comparison"):
            continue
        key = (row["data"]["source"], row["recipe"], row["framework"])
        seeds = groups.setdefault(key, {})
        if row["seed"] in seeds:
            raise ValueError(f"{key}: seed {row['seed']} has two rows; gather each run once")
        seeds[row["seed"]] = row["final_accuracy"]
    return groups


def derive(groups) -> dict:
    """Per source: the pooled std, the prior, and per recipe the derived threshold."""
    out = {}
    for source in sorted({k[0] for k in groups}):
        mine = {k: v for k, v in groups.items() if k[0] == source}
        measured = {k: v for k, v in mine.items() if len(v) >= thresholds.MIN_SEEDS_FOR_GATE}
        if not measured:
            continue
        pooled, df = thresholds.pooled_std(list(v.values()) for v in measured.values())
        prior = math.ceil(pooled / PRIOR_STEP - 1e-9) * PRIOR_STEP
        gates = {k: thresholds.derive_threshold(list(v.values()), prior)
                 for k, v in measured.items()}
        recipes = {}
        for (_, recipe, _), gate in gates.items():
            recipes[recipe] = min(recipes.get(recipe, 1.0), gate.threshold)
        # A framework with fewer seeds does not set the gate; its seeds are shown against it.
        short = {k: v for k, v in mine.items() if k not in measured and k[1] in recipes}
        out[source] = {"pooled": pooled, "df": df, "prior": round(prior, 4), "gates": gates,
                       "recipes": recipes, "short": short}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="directories of result rows")
    args = parser.parse_args(argv)
    derived = derive(seed_groups(read_rows(args.dirs)))
    if not derived:
        print(f"no recipe has {thresholds.MIN_SEEDS_FOR_GATE} or more seeds in the accuracy "
              "tier's rows there", file=sys.stderr)
        return 1
    disagree = []
    for source, d in derived.items():
        table = [[recipe, fw, g.n, f"{100 * g.mean:.2f}", f"{100 * g.std:.2f}",
                  f"{100 * g.std_high:.2f}", f"{100 * g.lowest_healthy:.2f}",
                  f"{100 * g.threshold:.1f}",
                  " / ".join(f"{100 * _ci_fail(g, d['recipes'][recipe], drop):.2g}%"
                             for drop in DROPS)]
                 for (_, recipe, fw), g in sorted(d["gates"].items())]
        print(f"\n{source}: pooled seed std {100 * d['pooled']:.2f} points ({d['df']} degrees "
              f"of freedom) -> prior {100 * d['prior']:.1f} points "
              f"(twinbench/thresholds.py: {100 * thresholds.prior_seed_std(source):.1f})")
        print(tabulate(table, headers=["recipe", "framework", "seeds", "mean %", "std",
                                       "std 95% upper", "lowest healthy seed %",
                                       "derived threshold %",
                                       "one-seed CI run fails, after losing "
                                       + " / ".join(f"{100 * d:g}" for d in DROPS) + " points"],
                       tablefmt="github",
                       disable_numparse=True))
        for (_, recipe, fw), seeds in sorted(d["short"].items()):
            values = ", ".join(f"{100 * a:.2f}" for _, a in sorted(seeds.items()))
            below = [s for s, a in seeds.items() if a < d["recipes"][recipe]]
            print(f"{recipe} in {fw}: {len(seeds)} seed(s), fewer than "
                  f"{thresholds.MIN_SEEDS_FOR_GATE}: not used for the gate; seeds "
                  f"{sorted(seeds)}: {values}% "
                  f"({'all above' if not below else f'seeds {sorted(below)} below'} the "
                  f"recipe's derived {100 * d['recipes'][recipe]:.1f}%)")
        if abs(d["prior"] - thresholds.prior_seed_std(source)) > 1e-9:
            disagree.append(f"{source}: prior {thresholds.prior_seed_std(source)} in the table, "
                            f"{d['prior']} derived")
        for recipe, value in sorted(d["recipes"].items()):
            try:
                current = thresholds.threshold(source, recipe)
            except thresholds.NoThreshold:
                current = None
            print(f"{source} {recipe}: derived {100 * value:.1f}%, table "
                  f"{'none' if current is None else f'{100 * current:.1f}%'}")
            if current is None or abs(current - value) > 1e-9:
                disagree.append(f"{source} {recipe}: table {current}, derived {value}")
    for line in disagree:
        print(f"DISAGREES: {line}", file=sys.stderr)
    return 1 if disagree else 0


if __name__ == "__main__":
    sys.exit(main())
