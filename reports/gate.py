"""`gate`: fail when throughput regressed beyond the drift between runs (docs/methodology.md#regression-gate).

Inputs: a baseline of several runs and a current set of runs of the same machine, each run a
pytest session (rows of one session share a `run_id`). Two designs:

- unpaired (default): a baseline recorded once (10 runs) and reused, 4 current runs per job;
- paired (`--paired`): one job measures the baseline build and the current build alternately
  (scripts/paired_runs.py: B C, C B, B C, ...); the i-th runs of the two sides (in run order)
  form a pair, and a drift of the machine, which moves both members of a pair, cancels in
  their ratio. On a host that drifts between runs only this design holds its false-alarm rate.

For each configuration, and for each device class's suite score (the geometric mean over its
compared configurations, per run), the hypotheses of one CI run:

1. one replicate per run: the run's median round (rounds inside one run share its clocks,
   thermals and neighbours, so they never stand for independent runs);
2. the change: median of the current run medians / median of the baseline run medians - 1
   (paired: the median pair ratio - 1);
3. the test: exact one-sided Mann-Whitney on the run medians, "current slower than baseline"
   (paired: exact one-sided Wilcoxon signed-rank on the log pair ratios). Rank-based, so its
   false-alarm rate holds for any distribution of the run figures at any small number of
   runs (a t-test on 4 runs leans on normality it cannot check; a bootstrap of 4 runs
   underestimates the spread and alarms too often);
4. the family: weighted Holm over all hypotheses of the CI run, the suite scores sharing
   SUITE_ALPHA_SHARE of alpha and the configurations the rest, so the chance that a run of
   the same code fails anywhere is at most FAMILY_ALPHA;
5. the practical threshold T, per device class (PRACTICAL_THRESHOLD): a hypothesis regresses
   when Holm rejects AND its median dropped by at least half of T (significant but smaller
   drops are reported, not failed). The gate must be able to see a drop of T: the "allowed
   drop" is the drop caught with POWER probability at the spread between the baseline's runs
   (the standard deviation of their log medians; paired: of the log pair ratios); when it
   exceeds T, or the runs are too few for any p-value to reach the hypothesis's Holm share,
   it cannot be resolved.

Outcomes, each with an exit code (reports/__main__.py) and one line per configuration and
suite score: pass (0), regression (1: any configuration or suite score regressed),
cannot-resolve (3: none regressed but something could not be resolved: too few runs, allowed
drop above T, missing in the current runs (a whole framework or mode missing is named), out
of memory in some runs and not others). Inputs that cannot be gated at all (other hardware,
malformed rows, a baseline with an injected slowdown, paired sides of unequal run counts)
exit 2 through GateInputError.
"""
from __future__ import annotations

import argparse
import functools
import statistics
from dataclasses import dataclass

import numpy as np

from reports import stats
from reports.load import Config, Measurement, by_machine, measurements
from reports.tables import DASH, Table, fmt_rate
from twinbench.fingerprint import comparison_basis, hardware_difference, host_label, with_ceilings
from twinbench.results import read_rows

# Family-wise false-alarm rate of one CI run (all its configurations together).
FAMILY_ALPHA = 0.05
# The drop a user must hear about, per device class. GPU: 5%, the precision a GPU gate is
# asked for (issue 13); CPU: 15%, because shared 2-core VMs drift 8-17% between single runs
# (docs/methodology.md#regression-gate): a 15% drop is about 3 between-run deviations there.
# Provisional: the calibration (docs/methodology.md#regression-gate) measured a run spread of
# 8.6-19.7% on the CPU box, where the gate mostly cannot resolve 15% at 10 + 3 runs.
PRACTICAL_THRESHOLD = {"cpu": 0.15, "gpu": 0.05}
# Only drops of at least this fraction of T can fail: a tiny but consistent slowdown is shown,
# not failed; half rather than all of T, so that a regression of exactly T, whose observed
# drop scatters around T, is not missed half of the time.
FLOOR_FRACTION = 0.5
# The allowed drop is the drop caught with this probability (the usual 80% power).
POWER = 0.8
# The documented run counts (docs/methodology.md#regression-gate): with 10 baseline and 4
# current runs the best p-value is 1/C(14,4) = 0.001, under a configuration's strictest level
# alpha / 2K for up to 25 configurations at alpha 0.05; the baseline is recorded once, the
# current runs cost CI time.
BASELINE_RUNS = 10
CURRENT_RUNS = 4
_POWER_SIMULATIONS = 4000   # allowed-drop Monte Carlo: its 80% is known to about +-0.6%
_POWER_SEED = 0

EXIT_PASS, EXIT_REGRESSION, EXIT_INPUT_ERROR, EXIT_CANNOT_RESOLVE = 0, 1, 2, 3
PASS, REGRESSION, CANNOT_RESOLVE = "pass", "regression", "cannot-resolve"


class GateInputError(Exception):
    """The inputs cannot be gated (different hardware, injected baseline): exit 2."""


@dataclass(frozen=True)
class RunComparison:
    """The run-level figures of one configuration (both sides measured in every run)."""
    baseline: tuple[float, ...]     # run medians, img/s (paired: in run order)
    current: tuple[float, ...]
    change: float                   # unpaired: median(current) / median(baseline) - 1;
                                    # paired: exp(median of log(current / baseline)) - 1
    p_value: float                  # exact one-sided Mann-Whitney (paired: signed-rank), before Holm
    spread: float | None            # unpaired: std of log run medians of the baseline;
                                    # paired: std of the log pair ratios (None: < 2 runs)
    paired: bool = False


def compare_runs(baseline_medians, current_medians) -> RunComparison:
    b, c = tuple(baseline_medians), tuple(current_medians)
    if not b or not c:
        raise ValueError("each side needs at least one run")
    return RunComparison(b, c, statistics.median(c) / statistics.median(b) - 1,
                         stats.slower_p_value(b, c), stats.log_spread(b))


def compare_pairs(baseline_medians, current_medians) -> RunComparison:
    """Paired design: the i-th current run was measured next to the i-th baseline run (one job
    alternating the two builds), so a drift of the machine moves both members of a pair and
    cancels in their ratio; only the ratios enter the test."""
    b, c = tuple(baseline_medians), tuple(current_medians)
    if not b or len(b) != len(c):
        raise ValueError(f"pairs need as many current as baseline runs (got {len(b)} and {len(c)})")
    ratios = [np.log(y / x) for x, y in zip(b, c)]
    spread = float(np.std(ratios, ddof=1)) if len(ratios) > 1 else None
    return RunComparison(b, c, float(np.expm1(statistics.median(ratios))),
                         stats.slower_paired_p_value(ratios), spread, paired=True)


@functools.lru_cache(maxsize=None)
def _detection_draws(m: int, n: int, u_crit: int) -> tuple[np.ndarray, np.ndarray]:
    """For simulated standard normal run figures (m baseline, n current; seeded), in units of
    the spread: the smallest log shift at which U <= u_crit, and median(current) -
    median(baseline) before any shift."""
    rng = np.random.default_rng(_POWER_SEED)
    zb = rng.standard_normal((_POWER_SIMULATIONS, m))
    zc = rng.standard_normal((_POWER_SIMULATIONS, n))
    # U(shift) counts the pairs with zc - zb > shift: U <= u_crit once the shift reaches the
    # (u_crit + 1)-th largest pairwise difference.
    differences = np.sort((zc[:, None, :] - zb[:, :, None]).reshape(_POWER_SIMULATIONS, -1), axis=1)
    rank_shift = differences[:, -(u_crit + 1)]
    return rank_shift, np.median(zc, axis=1) - np.median(zb, axis=1)


def allowed_drop(m: int, n: int, level: float, spread: float, floor: float) -> float | None:
    """The relative drop caught with POWER probability by the rule at this level (rank test
    and floor), for run medians lognormal with `spread` (a planning figure: the decision
    itself assumes no distribution). None when no p-value of m and n runs reaches `level`."""
    u_crit = stats.critical_u(m, n, level)
    if u_crit is None:
        return None
    rank_shift, median_gap = _detection_draws(m, n, u_crit)
    # A simulated draw is caught at log shift d when d >= spread * rank_shift (rank test) and
    # the observed drop reaches the floor: d - spread * median_gap >= -log(1 - floor).
    needed = np.maximum(spread * rank_shift, -np.log1p(-floor) + spread * median_gap)
    return float(-np.expm1(-np.quantile(needed, POWER)))


@functools.lru_cache(maxsize=None)
def _paired_detection_draws(n: int, w_crit: int) -> tuple[np.ndarray, np.ndarray]:
    """For simulated standard normal pair ratios (n; seeded), in units of the spread: the
    smallest log shift at which W+ <= w_crit, and the median ratio before any shift."""
    z = np.random.default_rng(_POWER_SEED).standard_normal((_POWER_SIMULATIONS, n))
    # W+ equals the number of positive Walsh averages (z_i + z_j) / 2, i <= j; after a shift t
    # it counts those above t, so W+ <= w_crit once t reaches the (w_crit + 1)-th largest.
    i, j = np.triu_indices(n)
    walsh = np.sort((z[:, i] + z[:, j]) / 2, axis=1)
    return walsh[:, -(w_crit + 1)], np.median(z, axis=1)


def allowed_drop_paired(n: int, level: float, spread: float, floor: float) -> float | None:
    """allowed_drop for the paired rule: n pairs whose log ratios spread by `spread` (normal,
    a planning figure as above). None when no p-value of n pairs reaches `level`."""
    w_crit = stats.critical_w(n, level)
    if w_crit is None:
        return None
    rank_shift, median_ratio = _paired_detection_draws(n, w_crit)
    needed = np.maximum(spread * rank_shift, -np.log1p(-floor) + spread * median_ratio)
    return float(-np.expm1(-np.quantile(needed, POWER)))


@dataclass(frozen=True)
class Verdict:
    config: Config
    outcome: str                    # pass | regression | cannot-resolve
    reason: str                     # one line
    runs: tuple[int, int]           # baseline, current runs that measured it (ok or not)
    baseline_median: float | None = None
    current_median: float | None = None
    change: float | None = None
    p_value: float | None = None
    allowed_drop: float | None = None
    spread: float | None = None     # RunComparison.spread

    def line(self) -> str:
        return f"{' '.join(cells(self.config))}: {self.outcome.upper()}: {self.reason}"


# The suite score of a device class: the geometric mean of all its compared configurations
# per run (paired: of their pair ratios), gated beside them as one more hypothesis. A large
# share of a shared host's drift is common to every configuration of a run, which averaging
# cannot remove, but the configurations' own noise averages out, and a change that slows every
# step (a slower build, a dependency bump, the injected slowdown) moves all of them: the suite
# catches it at run counts where single configurations cannot be resolved
# (docs/methodology.md#regression-gate).
SUITE = "all"
# Share of the family's alpha given to the suite scores (weighted Holm); the configurations
# share the rest equally. Half: with it 7-9 pairs resolve a 15% suite drop at the CPU box's
# pair spread (10-13%), where an equal share among 13 hypotheses would need 10-14.
SUITE_ALPHA_SHARE = 0.5


def suite_config(device: str) -> Config:
    return Config(SUITE, SUITE, device, SUITE, SUITE, 0, SUITE)


def is_suite(config: Config) -> bool:
    return config.framework == SUITE


def cells(config: Config) -> list[str]:
    if is_suite(config):
        return ["all", "suite score", config.device, "all", "all", "all", "all"]
    return config.cells()


def holm_weights(configs) -> dict[Config, float]:
    """Weights of the weighted Holm family: SUITE_ALPHA_SHARE split among the suite scores,
    the rest among the configurations (all equal when there is no suite score)."""
    suites = [c for c in configs if is_suite(c)]
    singles = [c for c in configs if not is_suite(c)]
    if not suites or not singles:
        return dict.fromkeys(configs, 1 / max(len(configs), 1))
    return {**dict.fromkeys(suites, SUITE_ALPHA_SHARE / len(suites)),
            **dict.fromkeys(singles, (1 - SUITE_ALPHA_SHARE) / len(singles))}


def decide(compared: dict[Config, RunComparison], *, alpha: float = FAMILY_ALPHA,
           thresholds: dict[str, float] | None = None) -> dict[Config, Verdict]:
    """The decision rule on run-level figures (steps 3-5 of the module docstring) for every
    configuration measured in all runs of both sides, and the suite scores: the family of one
    CI run."""
    thresholds = {**PRACTICAL_THRESHOLD, **(thresholds or {})}
    weights = holm_weights(compared)
    rejected = stats.holm({c: r.p_value for c, r in compared.items()}, alpha, weights)
    verdicts = {}
    for config, r in compared.items():
        level = alpha * weights[config]        # its strictest Holm threshold
        threshold = thresholds[config.device]
        floor = FLOOR_FRACTION * threshold
        m, n = len(r.baseline), len(r.current)
        if r.spread is None:
            allowed = None
        elif r.paired:
            allowed = allowed_drop_paired(n, level, r.spread, floor)
        else:
            allowed = allowed_drop(m, n, level, r.spread, floor)
        figures = dict(runs=(m, n), baseline_median=statistics.median(r.baseline),
                       current_median=statistics.median(r.current), change=r.change,
                       p_value=r.p_value, allowed_drop=allowed, spread=r.spread)
        best_p = stats.smallest_paired_p_value(n) if r.paired else stats.smallest_p_value(m, n)
        if rejected[config] and -r.change >= floor:
            outcome, reason = REGRESSION, (f"{-r.change:.1%} slower, p = {r.p_value:.2g} "
                                           f"significant after Holm over {len(compared)}")
        elif allowed is None:
            runs = f"{n} pairs" if r.paired else f"{m} baseline and {n} current"
            advice = ("take more pairs" if r.paired else
                      f"take {BASELINE_RUNS} baseline and {CURRENT_RUNS} current runs")
            outcome, reason = CANNOT_RESOLVE, (
                f"too few runs: {runs} give at best p = {best_p:.2g}, its Holm share needs "
                f"<= {level:.2g} ({advice})")
        elif allowed > threshold:
            what = "pair ratios spread" if r.paired else "runs spread"
            outcome, reason = CANNOT_RESOLVE, (
                f"allowed drop {allowed:.1%} exceeds the practical threshold {threshold:.0%}: "
                f"{what} {r.spread:.1%}, add runs or quiet the machine")
        else:
            small = " (significant, below the practical floor)" if rejected[config] else ""
            outcome, reason = PASS, (f"change {r.change:+.1%} within the allowed drop "
                                     f"{allowed:.1%}{small}")
        verdicts[config] = Verdict(config, outcome, reason, **figures)
    return verdicts


def _statuses(m: Measurement | None) -> tuple[int, int]:
    """(runs in which it ran, runs in which it failed)."""
    if m is None:
        return 0, 0
    ok = sum(1 for s in m.run_status.values() if s == "ok")
    return ok, len(m.run_status) - ok


def _failure_verdict(config, b: Measurement | None, c: Measurement | None,
                     side_runs: tuple[int, int]) -> Verdict | None:
    """The verdict when a side is missing or failed in some run; None when both ran every time.
    side_runs: how many runs each side holds in all."""
    (b_ok, b_bad), (c_ok, c_bad) = _statuses(b), _statuses(c)
    runs = (b_ok + b_bad, c_ok + c_bad)
    if c is None:
        return Verdict(config, CANNOT_RESOLVE, f"missing from the current runs (in {runs[0]} "
                       f"baseline run(s)): a configuration that is not measured cannot pass", runs)
    if b is None:
        return Verdict(config, PASS, "new: no baseline to compare with (not gated)", runs)
    for side, have, total in (("baseline", runs[0], side_runs[0]), ("current", runs[1], side_runs[1])):
        if have < total:   # a crashed or partial run: named, never a silently smaller n
            return Verdict(config, CANNOT_RESOLVE, f"missing from {total - have} of the {total} "
                           f"{side} runs (a crashed or partial run?)", runs)
    if b_ok and b_bad or c_ok and c_bad:
        side = "baseline" if b_ok and b_bad else "current"
        ok, bad = (b_ok, b_bad) if side == "baseline" else (c_ok, c_bad)
        what = "OOM" if "oom" in {*b.run_status.values(), *c.run_status.values()} else "failed"
        return Verdict(config, CANNOT_RESOLVE, f"intermittent: ran in {ok} and {what} in {bad} "
                       f"{side} run(s); a configuration at the edge of memory has no stable figure", runs)
    if b_bad and c_bad:
        return Verdict(config, PASS, "not compared: fails in every baseline and current run", runs)
    if b_bad:
        return Verdict(config, PASS, "runs now (failed in every baseline run)", runs)
    if c_bad:
        return Verdict(config, REGRESSION, f"ran in all {b_ok} baseline run(s), fails "
                       f"({c.status.upper()}) in all {c_ok + c_bad} current run(s)", runs)
    return None


def missing_families(base: dict[Config, Measurement], cur: dict[Config, Measurement]) -> list[str]:
    """Whole groups of configurations (a framework, architecture, mode, phase, batch size,
    device) measured in the baseline and absent from the current runs."""
    missing = []
    for field in ("framework", "arch", "device", "mode", "phase", "batch_size"):
        gone = sorted({str(getattr(c, field)) for c in base} - {str(getattr(c, field)) for c in cur})
        missing += [f"{field} {value}: all "
                    f"{sum(1 for c in base if str(getattr(c, field)) == value)} configuration(s) "
                    f"missing from the current runs" for value in gone]
    return missing


@dataclass
class GateResult:
    verdicts: list[Verdict]
    families_missing: list[str]
    notes: list[str]
    alpha: float

    @property
    def exit_code(self) -> int:
        outcomes = {v.outcome for v in self.verdicts}
        if REGRESSION in outcomes:
            return EXIT_REGRESSION
        if CANNOT_RESOLVE in outcomes or self.families_missing:
            return EXIT_CANNOT_RESOLVE
        return EXIT_PASS

    def count(self, outcome: str) -> int:
        return sum(1 for v in self.verdicts if v.outcome == outcome)

    def table(self) -> Table:
        rows = []
        for v in self.verdicts:
            rows.append([*cells(v.config), f"{v.runs[0]} / {v.runs[1]}",
                         DASH if v.baseline_median is None else fmt_rate(v.baseline_median),
                         DASH if v.current_median is None else fmt_rate(v.current_median),
                         DASH if v.change is None else f"{100 * v.change:+.1f}%",
                         DASH if v.p_value is None else f"{v.p_value:.2g}",
                         DASH if v.allowed_drop is None else f"{100 * v.allowed_drop:.1f}%",
                         v.outcome, v.reason])
        return Table(GATE_HEADERS, rows, ["left"] * 7 + ["right"] * 6 + ["left"] * 2)

    def summary(self) -> str:
        suites = sum(1 for v in self.verdicts if is_suite(v.config))
        return (f"{len(self.verdicts) - suites} configuration(s) and {suites} suite score(s): "
                f"{self.count(PASS)} pass, {self.count(REGRESSION)} regression, "
                f"{self.count(CANNOT_RESOLVE)} cannot resolve; family-wise false-alarm rate "
                f"<= {self.alpha:g} (weighted Holm) -> exit {self.exit_code}")


GATE_HEADERS = [*Config.COLUMNS, "runs (base / cur)", "baseline img/s", "current img/s",
                "change", "p (one-sided)", "allowed drop", "verdict", "reason"]


def check_same_hardware(baseline_rows: list[dict], current_rows: list[dict]) -> str:
    """GateInputError with the reason when the rows come from different hardware (or either
    side mixes machines); else what the comparison could rest on."""
    sides = {name: [with_ceilings(g[0]["machine"], g) for g in by_machine(rows).values()]
             for name, rows in (("baseline", baseline_rows), ("current", current_rows))}
    reference = sides["baseline"][0]
    for name, machines in sides.items():
        for other in machines:
            why = hardware_difference(reference, other)
            if why:
                raise GateInputError(
                    f"refusing to compare different hardware: baseline {host_label(reference)} "
                    f"(id {reference['id']}) vs {name} {host_label(other)} (id {other['id']}): "
                    f"{why}; throughput from different machines is not a regression signal "
                    f"(pass --allow-different-hardware to compare anyway)")
    return comparison_basis(reference, sides["current"][0])


def _run_count(rows: list[dict]) -> int:
    return len({r["run_id"] for r in rows if r["kind"] == "throughput"})


def _injected(rows: list[dict]) -> set[float]:
    return {r["injected_slowdown"]["fraction"] for r in rows if r.get("injected_slowdown")}


def _by_run(m: Measurement) -> dict[str, float]:
    """Run id -> the run's median, in run order (run ids start with their UTC start time)."""
    return {run: statistics.median(m.runs[run]) for run in sorted(m.runs) if m.runs[run]}


def _pair_runs(baseline_rows: list[dict], current_rows: list[dict]) -> list[str]:
    """Check the paired design's inputs; notes about them. GateInputError when the sides
    hold different numbers of runs (pairs are formed in run order: i-th with i-th)."""
    ids = [sorted({r["run_id"] for r in rows if r["kind"] == "throughput"})
           for rows in (baseline_rows, current_rows)]
    if len(ids[0]) != len(ids[1]):
        raise GateInputError(f"--paired needs as many current as baseline runs, measured "
                             f"alternately in one job; got {len(ids[0])} baseline and "
                             f"{len(ids[1])} current runs")
    if ids[0] and (ids[0][-1] < ids[1][0] or ids[1][-1] < ids[0][0]):
        return ["paired runs are not interleaved: every run of one side started before every "
                "run of the other, so a drift of the machine is not cancelled by pairing "
                "(alternate the two builds in one job)"]
    return []


def suite_comparisons(base: dict[Config, Measurement], cur: dict[Config, Measurement],
                      configs, paired: bool) -> dict[Config, RunComparison]:
    """Per device class with two or more compared configurations: the suite score, the
    geometric mean of the run medians of all its compared configurations, per run."""
    out = {}
    for device in sorted({c.device for c in configs}):
        members = [c for c in configs if c.device == device]
        if len(members) < 2:
            continue
        sides = []
        for side in (base, cur):
            per_run = [_by_run(side[c]) for c in members]
            runs = sorted(set.intersection(*(set(r) for r in per_run)))
            sides.append([float(np.exp(np.mean([np.log(r[run]) for r in per_run])))
                          for run in runs])
        out[suite_config(device)] = (compare_pairs if paired else compare_runs)(*sides)
    return out


def run_gate(baseline_rows: list[dict], current_rows: list[dict], *, alpha: float = FAMILY_ALPHA,
             thresholds: dict[str, float] | None = None,
             allow_different_hardware: bool = False, paired: bool = False) -> GateResult:
    """Gate every configuration and the suite scores (rule in the module docstring).
    paired: the i-th baseline and i-th current runs (in run order) were measured next to each
    other, alternating the two builds in one job; the test then reads the pair ratios."""
    notes = []
    if _injected(baseline_rows):
        raise GateInputError(f"the baseline carries an injected slowdown of "
                             f"{sorted(_injected(baseline_rows))} (TWINBENCH_INJECT_SLOWDOWN, a "
                             f"test switch): a baseline must be a real measurement")
    if _injected(current_rows):
        notes.append(f"the current rows carry an INJECTED slowdown of "
                     f"{', '.join(f'{f:.0%}' for f in sorted(_injected(current_rows)))} "
                     f"(test switch, not a real figure)")
    if not allow_different_hardware:
        notes.append("same hardware, compared on: "
                     + check_same_hardware(baseline_rows, current_rows))
    if paired:
        notes += _pair_runs(baseline_rows, current_rows)
    base, cur = measurements(baseline_rows), measurements(current_rows)
    side_runs = (_run_count(baseline_rows), _run_count(current_rows))
    verdicts: dict[Config, Verdict] = {}
    compared: dict[Config, RunComparison] = {}
    for config in sorted(set(base) | set(cur), key=Config.sort_key):
        failed = _failure_verdict(config, base.get(config), cur.get(config), side_runs)
        if failed is not None:
            verdicts[config] = failed
        elif paired:
            b, c = _by_run(base[config]), _by_run(cur[config])
            compared[config] = compare_pairs(list(b.values()), list(c.values()))
        else:
            compared[config] = compare_runs(base[config].run_medians, cur[config].run_medians)
    compared.update(suite_comparisons(base, cur, list(compared), paired))
    verdicts.update(decide(compared, alpha=alpha, thresholds=thresholds))
    ordered = sorted(verdicts, key=lambda c: (is_suite(c), Config.sort_key(c)))
    return GateResult([verdicts[c] for c in ordered], missing_families(base, cur), notes, alpha)


# -- command line (`python -m reports gate`) ---------------------------------------------------

def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", required=True,
                        help=f"baseline results (several runs; {BASELINE_RUNS} recommended)")
    parser.add_argument("--current", required=True,
                        help=f"current results (several runs; {CURRENT_RUNS} recommended)")
    parser.add_argument("--paired", action="store_true",
                        help="the i-th baseline and i-th current runs were measured next to each "
                             "other (one job alternating the two builds): test the pair ratios, "
                             "which cancels the drift of the machine; equal run counts needed")
    parser.add_argument("--allow-different-hardware", action="store_true",
                        help="compare even when the machines differ (never in CI)")
    parser.add_argument("--threshold", type=_fraction, metavar="FRACTION",
                        help="practical threshold for every device class (default: "
                             + ", ".join(f"{d} {t:g}" for d, t in PRACTICAL_THRESHOLD.items()) + ")")
    parser.add_argument("--alpha", type=_fraction, default=FAMILY_ALPHA,
                        help="family-wise false-alarm rate of one gate run (default: %(default)s)")


def command(args, stderr) -> int:
    """Run the gate for parsed arguments; print the table and one line per configuration."""
    # The gate rejects malformed files instead of skipping them: a silently dropped baseline
    # row would turn a regression into "missing".
    baseline = read_rows([args.baseline], on_error="raise")
    current = read_rows([args.current], on_error="raise")
    for side, rows, source in (("baseline", baseline, args.baseline), ("current", current, args.current)):
        if not any(r["kind"] == "throughput" for r in rows):
            stderr(f"error: {side} {source} has no throughput rows")
            return EXIT_INPUT_ERROR
    if any(r["machine"].get("sample") for r in baseline + current):
        stderr("warning: some rows are sample fixtures (machine.sample = true), not measurements")
    thresholds = None if args.threshold is None else dict.fromkeys(PRACTICAL_THRESHOLD, args.threshold)
    try:
        result = run_gate(baseline, current, alpha=args.alpha, thresholds=thresholds,
                          allow_different_hardware=args.allow_different_hardware,
                          paired=args.paired)
    except GateInputError as exc:
        stderr(f"error: {exc}")
        return EXIT_INPUT_ERROR
    print(result.table().markdown())
    print()
    for note in result.notes:
        print(f"note: {note}")
    for family in result.families_missing:
        print(f"CANNOT-RESOLVE: {family}")
    for verdict in result.verdicts:
        print(verdict.line())
    print(result.summary())
    return result.exit_code
