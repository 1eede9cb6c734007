"""Accuracy gates derived from measured seeds (docs/methodology.md#seed-spread).

    python scripts/derive_gates.py reports/samples/cpu-box-seeds reports/samples/cpu-box-resnet8 reports/samples/cpu-box-threads reports/samples/cpu-box-arm-seeds

Reads the accuracy-tier rows (not the matrix's) under the given directories, groups them by
data source, recipe and framework, and prints per group: the runs, mean, sample std and its
95% upper bound; per data source the pooled seed std, the prior it rounds up to
(thresholds.SEED_STD_BY_SOURCE); and per recipe the threshold thresholds.derive_threshold
gives (the lowest over the frameworks it is gated in), beside the one in
twinbench/thresholds.py. Exit 1 when a table value disagrees with its derivation.

The thread count is part of a run: the same seed at 1 and at 2 threads sums in another order
and ends elsewhere, so it is another draw of the recipe (counted as one run each). A group
whose runs used several thread counts is gated as a whole and, per thread count with
MIN_SEEDS_FOR_GATE seeds or more, on its own: the recipe takes the lowest, so the gate holds
at the thread count CI runs (all of a 2-core runner) as well as on one thread per worker. The
pooled spread is taken within thread counts; the spreads of one group's thread counts are
compared (F test) in the output. The same seed run twice at one thread count with the same
accuracy is one run (a replay); with another accuracy it is an error.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tabulate import tabulate  # noqa: E402

from twinbench import thresholds  # noqa: E402
from twinbench.frameworks.keras_backends import ARMS  # noqa: E402
from twinbench.results import read_rows  # noqa: E402

PRIOR_STEP = 0.001   # the prior is the pooled std rounded up to a tenth of a point


DROPS = (0.0, 0.02, 0.03, 0.05)
# Thread counts whose seed spreads differ at this level (two-sided F test) are gated each on
# its own as well (the recipe takes the lowest); otherwise their runs are one population and
# the per-thread-count rows are shown as a check (a lower one from 10 seeds is mostly the
# noise of a small sample: the minimum of several noisy derivations is biased low).
SPREADS_DIFFER = 0.05   # regressions the table reports the CI gate's chance against


def _ci_fail(gate: thresholds.DerivedGate, threshold: float, drop: float) -> float:
    """Chance that one seed of the recipe as measured (its mean and std), less `drop`, fails."""
    return thresholds.fail_rate(gate.mean, gate.std, threshold, gate.prior, drop=drop)


def seed_groups(rows: list[dict]) -> dict[tuple[str, str, str], dict[tuple[int, object], float]]:
    """(source, recipe, framework) -> {(seed, threads): final accuracy} of the accuracy tier's
    rows (threads: the backend's recorded thread count, None where it records none)."""
    groups: dict[tuple[str, str, str], dict[tuple[int, object], float]] = {}
    for row in rows:
        if row.get("kind") != "accuracy" or row.get("comparison"):
            continue
        key = (row["data"]["source"], row["recipe"], row["framework"])
        run = (row["seed"], (row.get("backend") or {}).get("threads"))
        seeds = groups.setdefault(key, {})
        if run in seeds and seeds[run] != row["final_accuracy"]:
            raise ValueError(f"{key}: seed {run[0]} at {run[1]} thread(s) has two rows with "
                             f"different accuracies ({seeds[run]} and {row['final_accuracy']}); "
                             "gather each run once")
        seeds[run] = row["final_accuracy"]
    return groups


def by_threads(runs: dict[tuple[int, object], float]) -> dict[object, list[float]]:
    """A group's accuracies per thread count."""
    out: dict[object, list[float]] = {}
    for (_, threads), accuracy in sorted(runs.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])):
        out.setdefault(threads, []).append(accuracy)
    return out


def _threads_label(threads) -> str:
    return "?" if threads is None else str(threads)


def derive(groups) -> dict:
    """Per source: the pooled std, the prior, and per recipe the derived threshold."""
    out = {}
    for source in sorted({k[0] for k in groups}):
        mine = {k: v for k, v in groups.items() if k[0] == source}
        measured = {k: v for k, v in mine.items() if len(v) >= thresholds.MIN_SEEDS_FOR_GATE}
        if not measured:
            continue
        # within thread counts: a shift of the mean between thread counts is not seed spread
        pooled, df = thresholds.pooled_std(
            accs for v in measured.values() for accs in by_threads(v).values())
        prior = math.ceil(pooled / PRIOR_STEP - 1e-9) * PRIOR_STEP
        gates = {}       # (source, recipe, framework, threads label) -> DerivedGate
        sets_gate = {}   # the same keys -> whether that row sets the recipe's gate
        spreads = {}     # (source, recipe, framework) -> (runs per thread count, (F ratio, p))
        for key, runs in measured.items():
            split = by_threads(runs)
            label = "+".join(_threads_label(t) for t in split)
            gates[key + (label,)] = thresholds.derive_threshold(list(runs.values()), prior)
            # A Keras arm runs the TensorFlow twin's program and shares its gate: its seeds
            # are checked against that gate (the fail columns), they do not lower it (five
            # seeds' t quantile would, for TensorFlow too).
            sets_gate[key + (label,)] = key[2] not in ARMS
            differ = False
            if len(split) == 2 and all(len(a) >= 2 for a in split.values()):
                spreads[key] = (split, thresholds.spread_ratio_test(*split.values()))
                differ = spreads[key][1][1] < SPREADS_DIFFER
            if len(split) > 1:
                for threads, accs in split.items():
                    if len(accs) >= thresholds.MIN_SEEDS_FOR_GATE:
                        gates[key + (_threads_label(threads),)] = \
                            thresholds.derive_threshold(accs, prior)
                        sets_gate[key + (_threads_label(threads),)] = differ
        recipes = {}
        for (_, recipe, fw, threads), gate in gates.items():
            if sets_gate[(source, recipe, fw, threads)]:
                recipes[recipe] = min(recipes.get(recipe, 1.0), gate.threshold)
        # A framework with fewer seeds does not set the gate; its seeds are shown against it.
        short = {k: v for k, v in mine.items() if k not in measured and k[1] in recipes}
        out[source] = {"pooled": pooled, "df": df, "prior": round(prior, 4), "gates": gates,
                       "recipes": recipes, "short": short, "spreads": spreads,
                       "sets_gate": sets_gate}
    return out


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


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
        table = [[recipe, fw, threads, g.n, f"{100 * g.mean:.2f}", f"{100 * g.std:.2f}",
                  f"{100 * g.std_high:.2f}", f"{100 * g.lowest_healthy:.2f}",
                  f"{100 * g.threshold:.1f}" + ("" if d["sets_gate"][(source, recipe, fw, threads)]
                                                else " (check)"),
                  " / ".join(f"{100 * _ci_fail(g, d['recipes'][recipe], drop):.2g}%"
                             for drop in DROPS)]
                 for (_, recipe, fw, threads), g in sorted(d["gates"].items())]
        print(f"\n{source}: pooled seed std {100 * d['pooled']:.2f} points ({d['df']} degrees "
              f"of freedom) -> prior {100 * d['prior']:.1f} points "
              f"(twinbench/thresholds.py: {100 * thresholds.prior_seed_std(source):.1f})")
        print(tabulate(table, headers=["recipe", "framework", "threads", "runs", "mean %", "std",
                                       "std 95% upper", "lowest healthy seed %",
                                       "derived threshold %",
                                       "one-seed CI run fails, after losing "
                                       + " / ".join(f"{100 * d:g}" for d in DROPS) + " points"],
                       tablefmt="github",
                       disable_numparse=True))
        for (_, recipe, fw), (split, (ratio, p)) in sorted(d["spreads"].items()):
            stds = ", ".join(f"{100 * _std(a):.2f} at {_threads_label(t)} thread(s) "
                             f"({len(a)} seeds)" for t, a in split.items())
            print(f"{recipe} in {fw}: seed std {stds}; variance ratio {ratio:.2f}, "
                  f"two-sided F test p = {p:.2f}: "
                  + ("the spreads differ, each thread count is gated on its own too"
                     if p < SPREADS_DIFFER else
                     "no evidence that the spreads differ, so the runs are one population "
                     "and the per-thread-count rows (check) do not set the gate"))
        for (_, recipe, fw, threads), g in sorted(d["gates"].items()):
            if fw in ARMS and recipe in d["recipes"]:
                fails = _ci_fail(g, d["recipes"][recipe], 0.0)
                too_high = fails > thresholds.DERIVED_FALSE_FAIL
                print(f"{recipe} in {fw}: a Keras arm, checked against the recipe's gate "
                      f"{100 * d['recipes'][recipe]:.1f}% (not setting it): a healthy seed "
                      f"fails it with {100 * fails:.2g}%, at most "
                      f"{100 * thresholds.DERIVED_FALSE_FAIL:g}% allowed"
                      + (" -- TOO HIGH" if too_high else ""))
                if too_high:
                    disagree.append(f"{source} {recipe}: the gate fails healthy {fw} seeds "
                                    f"too often")
        for (_, recipe, fw), seeds in sorted(d["short"].items()):
            values = ", ".join(f"{100 * a:.2f}" for _, a in sorted(seeds.items()))
            below = [s for (s, _), a in seeds.items() if a < d["recipes"][recipe]]
            print(f"{recipe} in {fw}: {len(seeds)} run(s), fewer than "
                  f"{thresholds.MIN_SEEDS_FOR_GATE}: not used for the gate; seeds "
                  f"{sorted(s for s, _ in seeds)}: {values}% "
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
