"""The throughput regression gate (reports/gate.py, reports/stats.py): its rank test, its
decision rule on simulated runs with a known drift between runs (false-alarm rate and power
within their sampling error), and its outcomes and exit codes through the CLI.

No framework is needed: rows are synthetic, from fixed seeds, except the CPU box's committed
calibration runs, which the last tests re-analyze.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import re
import statistics
import tarfile
from pathlib import Path

import numpy as np
import pytest

from reports import stats
from reports.gate import (BASELINE_RUNS, CURRENT_RUNS, EXIT_CANNOT_RESOLVE, EXIT_INPUT_ERROR,
                          EXIT_PASS, EXIT_REGRESSION, FAMILY_ALPHA, POWER, PRACTICAL_THRESHOLD,
                          REGRESSION, allowed_drop, allowed_drop_paired, compare_pairs,
                          compare_runs, decide, run_gate, suite_config)
from fixtures.scripts import load_script
from reports.load import Config
from test_reports import GATE_CONFIGS, fake_machine, noisy_rounds, run_cli, throughput_row
from twinbench.results import write_row

# Synthetic runs: each run's level drifts lognormally by RUN_DRIFT around the configuration's
# median (the noise a CI job sees between runs), and its rounds vary by ROUND_CV inside it.
RUN_DRIFT = 0.04
ROUND_CV = 0.03
ROUNDS = 7


def write_runs(directory, machine, seed, *, runs, slowdown=0.0, drift=RUN_DRIFT,
               configs=GATE_CONFIGS, side="run"):
    rng = random.Random(seed)
    for r in range(runs):
        for config, median in configs:
            level = median * rng.lognormvariate(0.0, drift) * (1 - slowdown)
            write_row(directory, throughput_row(machine, noisy_rounds(rng, level, n=ROUNDS,
                                                                      cv=ROUND_CV),
                                                run_id=f"{side}-{seed}-{r}", **config))
    return directory


def gate_dirs(tmp_path, *, base_runs=BASELINE_RUNS, cur_runs=CURRENT_RUNS, slowdown=0.0,
              drift=RUN_DRIFT, seed=1, machine=None, cur_machine=None):
    machine = machine or fake_machine()
    base = write_runs(tmp_path / "base", machine, seed, runs=base_runs, drift=drift, side="base")
    cur = write_runs(tmp_path / "cur", cur_machine or machine, seed + 1000, runs=cur_runs,
                     slowdown=slowdown, drift=drift, side="cur")
    return base, cur


# --------------------------------------------------------------------------------------
# the rank test
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("m,n", [(3, 2), (4, 3), (5, 1)])
def test_exact_p_value_matches_enumeration_of_every_split(m, n):
    rng = random.Random(m * 10 + n)
    values = [rng.random() for _ in range(m + n)]
    base, cur = values[:m], values[m:]
    observed = stats.mann_whitney_u(base, cur)
    splits = list(itertools.combinations(range(m + n), n))
    as_extreme = sum(
        stats.mann_whitney_u([values[i] for i in range(m + n) if i not in s],
                             [values[i] for i in s]) <= observed for s in splits)
    assert stats.slower_p_value(base, cur) == pytest.approx(as_extreme / len(splits))


def test_p_value_with_ties_and_extremes():
    assert stats.slower_p_value([5.0, 6.0, 7.0], [1.0, 2.0]) == pytest.approx(1 / math.comb(5, 2))
    assert stats.slower_p_value([1.0, 2.0], [5.0, 6.0, 7.0]) == 1.0
    tied = stats.slower_p_value([1.0, 2.0, 2.0], [2.0, 0.5])   # enumerated with ties
    assert 0 < tied < 1


def test_critical_u_and_smallest_p_value():
    assert stats.smallest_p_value(8, 3) == pytest.approx(1 / 165)
    assert stats.critical_u(5, 3, 0.05 / 8) is None          # 1/56 cannot reach 0.00625
    assert stats.critical_u(10, 4, 0.05 / 8) == 2             # P(U <= 2) = 4/1001
    assert stats.critical_u(10, 4, 0.004) == 2 and stats.critical_u(10, 4, 0.0039) == 1


def test_holm_steps_down_and_stops_at_the_first_failure():
    p = {"a": 0.001, "b": 0.02, "c": 0.03, "d": 0.5}
    assert stats.holm(p, 0.05) == {"a": True, "b": False, "c": False, "d": False}  # 0.02 > 0.05/3
    assert stats.holm({"a": 0.01, "b": 0.02}, 0.05) == {"a": True, "b": True}      # 0.02 <= 0.05/1


@pytest.mark.parametrize("differences", [
    [-0.3, -0.1, 0.2, -0.05, -0.4], [0.1, -0.1, -0.2, 0.2, -0.3, -0.25],   # no ties
    [-0.1, 0.1, -0.2, -0.2, 0.3], [-0.1, 0.0, -0.2, 0.05]])                # ties, a zero
def test_signed_rank_p_value_matches_enumeration_of_every_sign_pattern(differences):
    """The exact paired p-value is the share of the 2^n sign patterns (zeros dropped) whose
    rank sum of positive differences is at most the observed one."""
    d = [x for x in differences if x != 0]
    ranks = stats._midranks([abs(x) for x in d])
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    patterns = list(itertools.product((False, True), repeat=len(d)))
    as_extreme = sum(sum(r for r, positive in zip(ranks, signs) if positive) <= observed + 1e-9
                     for signs in patterns)
    assert stats.slower_paired_p_value(differences) == pytest.approx(as_extreme / len(patterns))


def test_signed_rank_extremes_and_critical_w():
    assert stats.slower_paired_p_value([-0.1] * 3 + [-0.2] * 3) == pytest.approx(1 / 64)
    assert stats.slower_paired_p_value([0.1, 0.2]) == 1.0
    assert stats.slower_paired_p_value([0.0, 0.0]) == 1.0       # nothing to test
    assert stats.smallest_paired_p_value(6) == pytest.approx(1 / 64)
    assert stats.critical_w(5, 0.025) is None                   # 1/32 cannot reach 0.025
    assert stats.critical_w(6, 0.05) == 2                       # P(W+ <= 2) = 3/64 = 0.047
    assert stats.critical_w(10, 0.003) == 2 and stats.critical_w(10, 0.0029) == 1  # 3/1024


def test_weighted_holm_gives_each_hypothesis_its_share_and_passes_it_on():
    """Weights 0.5 (a suite score) and 0.25 + 0.25: the suite is tested at alpha x 0.5, a
    configuration at alpha x 0.25 until something is rejected; a rejection frees its weight."""
    weights = {"suite": 0.5, "a": 0.25, "b": 0.25}
    assert stats.holm({"suite": 0.02, "a": 0.5, "b": 0.5}, 0.05, weights)["suite"]
    assert not any(stats.holm({"suite": 0.03, "a": 0.013, "b": 0.5}, 0.05, weights).values())
    # the suite rejected at 0.025: its weight passes on, a is then tested at 0.05 x 0.25 / 0.5
    assert stats.holm({"suite": 0.001, "a": 0.02, "b": 0.5}, 0.05, weights) == \
        {"suite": True, "a": True, "b": False}
    assert stats.holm({"a": 0.01, "b": 0.02}, 0.05, {"a": 1, "b": 1}) == {"a": True, "b": True}


def test_allowed_drop_grows_with_spread_and_shrinks_with_runs():
    level = FAMILY_ALPHA / 8
    assert allowed_drop(5, 3, level, 0.04, 0.05) is None      # no p-value reaches the level
    narrow, wide = allowed_drop(10, 4, level, 0.02, 0.05), allowed_drop(10, 4, level, 0.08, 0.05)
    assert 0.05 <= narrow < wide
    assert allowed_drop(16, 6, level, 0.08, 0.05) < wide


# --------------------------------------------------------------------------------------
# the decision rule on simulated runs with a known drift
# --------------------------------------------------------------------------------------
SIM_CONFIGS = [Config("torch", "keras_cnn", "cpu", "eager", phase, b, "fp32")
               for phase in ("train", "infer") for b in (32, 64, 128, 256)]   # 8, as --quick
SIM_CI_RUNS = 300      # simulated CI runs per scenario: sampling error of a 3% rate about 1%


def simulate_decisions(rng, *, ci_runs, drift, slowdown, heavy_tails=False):
    """Verdicts of `ci_runs` simulated gate runs over SIM_CONFIGS: run medians lognormal
    with `drift` (or, heavy_tails, with Student-t(3) noise scaled to the same spread)."""
    m, n = BASELINE_RUNS, CURRENT_RUNS

    def draw(size):
        if heavy_tails:
            return drift * rng.standard_t(3, size) / math.sqrt(3.0)
        return drift * rng.standard_normal(size)
    results = []
    for _ in range(ci_runs):
        compared = {c: compare_runs(np.exp(draw(m)), np.exp(draw(n)) * (1 - slowdown))
                    for c in SIM_CONFIGS}
        results.append(decide(compared, alpha=FAMILY_ALPHA, thresholds={"cpu": 0.0001}))
    return results


def family_size() -> float:
    """Exact chance that Holm rejects anything when no configuration changed: the smallest
    of 8 independent p-values must reach alpha / 8, and a p-value reaches it with the exact
    probability P0(U <= critical u) (discrete, so below alpha / 8)."""
    k = len(SIM_CONFIGS)
    u_crit = stats.critical_u(BASELINE_RUNS, CURRENT_RUNS, FAMILY_ALPHA / k)
    counts = stats._u_null_counts(BASELINE_RUNS, CURRENT_RUNS)
    size = sum(counts[: u_crit + 1]) / math.comb(BASELINE_RUNS + CURRENT_RUNS, CURRENT_RUNS)
    return 1 - (1 - size) ** k


def _within(rate, expected, trials):
    """|rate - expected| within 3.5 binomial standard errors (a 1-in-2000 chance of a false
    failure of this test for a correct rule)."""
    se = math.sqrt(max(expected * (1 - expected), 1e-4) / trials)
    return abs(rate - expected) <= 3.5 * se, f"{rate:.3f} vs {expected:.3f} +- {3.5 * se:.3f}"


@pytest.mark.parametrize("heavy_tails", [False, True], ids=["lognormal", "student-t3"])
def test_aa_family_false_alarm_rate_is_the_exact_rank_test_rate(heavy_tails):
    """No change, 4% drift between runs, the practical floor switched off: the rate of CI runs
    with any false alarm equals the exact rank-test figure (about 3.1% for alpha 5%), whatever
    the distribution of the drift."""
    rng = np.random.default_rng(11 if heavy_tails else 12)
    runs = simulate_decisions(rng, ci_runs=SIM_CI_RUNS, drift=RUN_DRIFT, slowdown=0.0,
                              heavy_tails=heavy_tails)
    rate = np.mean([any(v.outcome == REGRESSION for v in r.values()) for r in runs])
    ok, text = _within(rate, family_size(), SIM_CI_RUNS)
    assert ok and family_size() <= FAMILY_ALPHA, text


def test_power_at_the_allowed_drop_is_the_promised_power():
    """A true slowdown equal to the allowed drop (computed for the true spread) is caught in
    POWER (80%) of the configurations, within the sampling error of the simulation."""
    level = FAMILY_ALPHA / len(SIM_CONFIGS)
    threshold = PRACTICAL_THRESHOLD["cpu"]
    drop = allowed_drop(BASELINE_RUNS, CURRENT_RUNS, level, RUN_DRIFT, threshold / 2)
    rng = np.random.default_rng(13)
    m, n, trials, caught = BASELINE_RUNS, CURRENT_RUNS, 3000, 0
    for _ in range(trials):
        r = compare_runs(np.exp(RUN_DRIFT * rng.standard_normal(m)),
                         np.exp(RUN_DRIFT * rng.standard_normal(n)) * (1 - drop))
        caught += r.p_value <= level and -r.change >= threshold / 2
    ok, text = _within(caught / trials, POWER, trials)
    assert ok, text


def test_aa_and_injected_20_percent_with_the_default_rule():
    """The default rule (practical floor on) on 4%-drift runs: A/A false alarms far below 1%
    of CI runs (the floor of 7.5% comes on top of the rank test), a 20% slowdown caught in
    nearly every configuration, and few configurations left unresolved (a baseline whose 10
    runs happen to spread well above 4% can push the allowed drop past 15%)."""
    rng = np.random.default_rng(14)
    aa = simulate_decisions_default(rng, slowdown=0.0)
    slow = simulate_decisions_default(rng, slowdown=0.20)
    aa_alarms = np.mean([any(v.outcome == REGRESSION for v in r.values()) for r in aa])
    caught = np.mean([v.outcome == REGRESSION for r in slow for v in r.values()])
    unresolved = np.mean([v.outcome != REGRESSION and v.outcome != "pass"
                          for r in aa for v in r.values()])
    assert aa_alarms <= 0.01, f"A/A false alarms in {aa_alarms:.1%} of CI runs"
    assert caught >= 0.95, f"20% slowdown caught in {caught:.1%} of configurations"
    assert unresolved <= 0.05, f"{unresolved:.1%} cannot-resolve at 4% drift"


def simulate_decisions_default(rng, *, slowdown, ci_runs=120):
    m, n = BASELINE_RUNS, CURRENT_RUNS
    out = []
    for _ in range(ci_runs):
        compared = {c: compare_runs(np.exp(RUN_DRIFT * rng.standard_normal(m)),
                                    np.exp(RUN_DRIFT * rng.standard_normal(n)) * (1 - slowdown))
                    for c in SIM_CONFIGS}
        out.append(decide(compared))
    return out


def test_power_at_the_allowed_drop_is_the_promised_power_paired():
    """The paired rule: a true slowdown equal to allowed_drop_paired (for the true spread of
    the pair ratios) is caught in POWER (80%) of the simulated pair sets."""
    level, floor, spread, n = FAMILY_ALPHA / 2, PRACTICAL_THRESHOLD["cpu"] / 2, 0.08, 10
    drop = allowed_drop_paired(n, level, spread, floor)
    rng = np.random.default_rng(15)
    trials, caught = 3000, 0
    for _ in range(trials):
        b = np.exp(0.1 * rng.standard_normal(n))          # any baseline level: ratios matter
        r = compare_pairs(b, b * np.exp(spread * rng.standard_normal(n)) * (1 - drop))
        caught += r.p_value <= level and -r.change >= floor
    ok, text = _within(caught / trials, POWER, trials)
    assert ok, text


# A machine that drifts: its speed follows a random walk from run to run (WALK per step) with
# a jitter common to all configurations of a run (JITTER), and every configuration adds its
# own noise (OWN); the CPU box's runs look like this (docs/methodology.md#regression-gate).
WALK, JITTER, OWN = 0.03, 0.03, 0.06
DRIFT_CONFIGS = [Config(fw, arch, "cpu", "eager", phase, 32, "fp32") for fw in ("tf", "torch")
                 for arch in ("lenet", "keras_cnn", "resnet8") for phase in ("train", "infer")]
PAIRS = 10


def drifting_runs(rng, count):
    """log speed factors of `count` consecutive runs, one column per DRIFT_CONFIGS entry."""
    machine = np.cumsum(WALK * rng.standard_normal(count)) + JITTER * rng.standard_normal(count)
    return machine[:, None] + OWN * rng.standard_normal((count, len(DRIFT_CONFIGS)))


def ci_decision(rng, *, paired, slowdown):
    """One simulated CI decision on the drifting machine. Unpaired: 10 baseline runs, then 4
    current runs. Paired: PAIRS pairs in the order B C C B B C ... (alternating which build
    goes first cancels a steady drift inside a pair)."""
    if paired:
        runs = drifting_runs(rng, 2 * PAIRS)
        first_is_base = np.arange(PAIRS) % 2 == 0
        b = np.where(first_is_base[:, None], runs[0::2], runs[1::2])
        c = np.where(first_is_base[:, None], runs[1::2], runs[0::2])
    else:
        runs = drifting_runs(rng, BASELINE_RUNS + CURRENT_RUNS)
        b, c = runs[:BASELINE_RUNS], runs[BASELINE_RUNS:]
    b, c = np.exp(b), np.exp(c) * (1 - slowdown)
    compare = compare_pairs if paired else compare_runs
    compared = {cfg: compare(b[:, k], c[:, k]) for k, cfg in enumerate(DRIFT_CONFIGS)}
    compared[suite_config("cpu")] = compare(np.exp(np.log(b).mean(axis=1)),
                                            np.exp(np.log(c).mean(axis=1)))
    return decide(compared)


def test_paired_gate_holds_its_false_alarm_rate_on_a_drifting_machine():
    """On a machine whose speed drifts between runs, a baseline recorded before the current
    runs alarms at more than twice alpha (the CPU box's 4 of 20); pairs measured in one job hold the
    family-wise rate at alpha or below, and catch an injected 20% slowdown in nearly every
    CI run through the suite score."""
    rng = np.random.default_rng(16)
    trials = 300

    def alarms(paired, slowdown):
        return [any(v.outcome == REGRESSION for v in ci_decision(rng, paired=paired,
                                                                 slowdown=slowdown).values())
                for _ in range(trials)]
    unpaired_aa = np.mean(alarms(False, 0.0))
    paired_aa = np.mean(alarms(True, 0.0))
    paired_slow = np.mean(alarms(True, 0.2))
    assert unpaired_aa > 2 * FAMILY_ALPHA, f"unpaired A/A alarms {unpaired_aa:.1%}"
    se = math.sqrt(FAMILY_ALPHA * (1 - FAMILY_ALPHA) / trials)
    assert paired_aa <= FAMILY_ALPHA + 3.5 * se, f"paired A/A alarms {paired_aa:.1%}"
    assert paired_slow >= 0.95, f"paired 20% slowdown caught in {paired_slow:.1%}"


# --------------------------------------------------------------------------------------
# outcomes and exit codes through the CLI
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gate_passes_two_sets_of_runs_of_the_same_code(tmp_path, capsys, seed):
    """A quiet runner (3% between runs): every configuration and the suite score pass. (At 4%
    a configuration whose 10 baseline runs happen to spread 6-7% cannot be resolved at 15% with
    its share of alpha, alpha / 2K while the suite score is not rejected.)"""
    base, cur = gate_dirs(tmp_path, seed=seed, drift=0.03)
    code, out, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_PASS, out + err
    assert out.count(": PASS: ") == len(GATE_CONFIGS) + 1     # and the suite score


@pytest.mark.parametrize("seed", [1, 2])
def test_gate_fails_a_20_percent_slowdown(tmp_path, capsys, seed):
    base, cur = gate_dirs(tmp_path, seed=seed, slowdown=0.20)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_REGRESSION, out
    assert out.count(": REGRESSION: ") == len(GATE_CONFIGS) + 1   # and the suite score


def test_one_run_a_side_cannot_resolve_even_a_large_drop(tmp_path, capsys):
    """The old single-run usage: no spread between runs to go on, never a pass."""
    base, cur = gate_dirs(tmp_path, base_runs=1, cur_runs=1, slowdown=0.3)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE, out
    assert out.count(": CANNOT-RESOLVE: too few runs") == len(GATE_CONFIGS) + 1


def test_too_noisy_runs_cannot_resolve(tmp_path, capsys):
    base, cur = gate_dirs(tmp_path, drift=0.25)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE, out
    assert "exceeds the practical threshold 15%" in out


def test_a_missing_framework_never_passes(tmp_path, capsys):
    base, _ = gate_dirs(tmp_path)
    torch_only = [(c, m) for c, m in GATE_CONFIGS if c["framework"] == "torch"]
    cur = write_runs(tmp_path / "torch-only", fake_machine(), 5, runs=CURRENT_RUNS,
                     configs=torch_only)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE, out
    assert "CANNOT-RESOLVE: framework tf: all 2 configuration(s) missing" in out
    assert out.count(": CANNOT-RESOLVE: missing from the current runs") == 2


def test_a_partial_current_run_is_named(tmp_path, capsys):
    base, cur = gate_dirs(tmp_path)
    (config, median), *_ = GATE_CONFIGS
    write_row(cur, throughput_row(fake_machine(), noisy_rounds(random.Random(3), median),
                                  run_id="partial", **config))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE and "missing from 1 of the 5 current runs" in out, out


def test_oom_in_every_current_run_is_a_regression_and_in_some_cannot_resolve(tmp_path, capsys):
    machine = fake_machine()
    config = dict(framework="torch", arch="keras_cnn", batch_size=32)
    base = write_runs(tmp_path / "base", machine, 1, runs=BASELINE_RUNS, configs=[(config, 800.0)])
    cur = tmp_path / "cur"
    for r in range(CURRENT_RUNS):
        write_row(cur, throughput_row(machine, [], status="oom", run_id=f"c{r}", **config))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_REGRESSION and "fails (OOM) in all 4 current run(s)" in out, out
    write_row(cur, throughput_row(machine, noisy_rounds(random.Random(2), 800.0), run_id="c9",
                                  **config))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE and "intermittent: ran in 1 and OOM in 4 current" in out, out


def test_new_configurations_are_listed_not_gated(tmp_path, capsys):
    base, cur = gate_dirs(tmp_path, drift=0.03)
    extra = [(dict(framework="torch", arch="lenet", batch_size=512), 9000.0)]
    write_runs(cur, fake_machine(), 1001, runs=CURRENT_RUNS, configs=extra, side="cur")  # same run ids
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_PASS and "new: no baseline" in out, out


def paired_dirs(tmp_path, *, pairs=8, slowdown=0.0, machine_swing=0.15, own=0.02, seed=7,
                interleave=True):
    """Runs of a machine whose speed swings by `machine_swing` (sd of logs) from one pair of
    runs to the next, measured in pairs: each pair's two runs share the machine's speed, and
    each configuration adds `own` noise. Run ids carry the start order, as real ones do."""
    rng, machine = random.Random(seed), fake_machine()
    for k in range(pairs):
        level = rng.lognormvariate(0.0, machine_swing)
        for side, order, factor in (("base", 2 * k, 1.0), ("cur", 2 * k + 1, 1 - slowdown)):
            order = order if interleave else order % 2 * pairs + k
            for config, median in GATE_CONFIGS:
                rounds = noisy_rounds(rng, median * level * factor * rng.lognormvariate(0.0, own),
                                      n=ROUNDS, cv=ROUND_CV)
                write_row(tmp_path / side, throughput_row(machine, rounds,
                                                          run_id=f"20261203T{order:06d}Z-{side}",
                                                          **config))
    return tmp_path / "base", tmp_path / "cur"


def test_paired_runs_see_through_a_machine_swing_that_unpaired_runs_cannot(tmp_path, capsys):
    """The machine's speed swings 15% between pairs: unpaired, no configuration can be
    resolved (exit 3); paired, the swing cancels in each pair's ratio and all pass."""
    base, cur = paired_dirs(tmp_path)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_CANNOT_RESOLVE and "exceeds the practical threshold" in out, out
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur, "--paired")
    assert code == EXIT_PASS, out
    assert out.count(": PASS: ") == len(GATE_CONFIGS) + 1 and "not interleaved" not in out


def test_paired_runs_catch_a_20_percent_slowdown_in_the_suite_score(tmp_path, capsys):
    base, cur = paired_dirs(tmp_path, slowdown=0.2)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur, "--paired")
    assert code == EXIT_REGRESSION and "all suite score cpu all all all all: REGRESSION" in out, out


def test_paired_gate_needs_equal_runs_and_names_runs_that_were_not_interleaved(tmp_path, capsys):
    base, cur = paired_dirs(tmp_path / "a", interleave=False)
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur, "--paired")
    assert "note: paired runs are not interleaved" in out, out
    base, cur = gate_dirs(tmp_path / "b")            # 10 baseline and 4 current runs
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur, "--paired")
    assert code == EXIT_INPUT_ERROR and "got 10 baseline and 4 current runs" in err, err


def test_gate_refuses_different_hardware_unless_allowed(tmp_path, capsys):
    epyc = fake_machine()
    h100 = fake_machine(cpu_model="Intel Xeon Platinum 8480+", cores=16, gpus=["NVIDIA H100 80GB HBM3"])
    base, cur = gate_dirs(tmp_path, machine=epyc, cur_machine=h100, drift=0.03)
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_INPUT_ERROR
    assert "AMD EPYC 7B13 (2 cores) / no GPU" in err and "NVIDIA H100 80GB HBM3" in err
    code, _, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur,
                           "--allow-different-hardware")
    assert code == EXIT_PASS, err


def test_gate_refuses_an_injected_baseline_and_notes_an_injected_current(tmp_path, capsys):
    base, cur = gate_dirs(tmp_path, slowdown=0.2)
    for path in cur.glob("*.json"):
        row = json.loads(path.read_text())
        row["injected_slowdown"] = {"fraction": 0.2}
        path.write_text(json.dumps(row))
    code, out, _ = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_REGRESSION and "INJECTED slowdown of 20%" in out, out
    code, _, err = run_cli(capsys, "gate", "--baseline", cur, "--current", base)
    assert code == EXIT_INPUT_ERROR and "injected slowdown" in err


def test_gate_rejects_a_malformed_baseline(tmp_path, capsys):
    base, cur = gate_dirs(tmp_path, base_runs=2, cur_runs=1)
    broken = base / "truncated.json"
    broken.write_text('{"schema": "twinbench.result/1", "images_per_s": [1000.0, 99')
    code, out, err = run_cli(capsys, "gate", "--baseline", base, "--current", cur)
    assert code == EXIT_INPUT_ERROR and str(broken) in err and out == ""


# --------------------------------------------------------------------------------------
# the injected slowdown (twinbench/slowdown.py)
# --------------------------------------------------------------------------------------

class FakeClock:
    """perf_counter for slowdown.py: advances by `tick` per reading and by a step's time."""

    def __init__(self, tick=1e-6):
        self.now, self.tick = 0.0, tick

    def perf_counter(self):
        self.now += self.tick
        return self.now


def test_injected_slowdown_adds_the_fraction_of_the_calibrated_step(monkeypatch):
    from twinbench import bench, slowdown

    clock = FakeClock()
    monkeypatch.setattr(slowdown.time, "perf_counter", clock.perf_counter)
    step_s = 0.002

    def run():
        clock.now += step_s
        return "loss"
    step = bench.Step(run=run, sync=lambda: None, info={"optimizer": "sgd"})
    slowed = slowdown.from_env(step, {slowdown.ENV: "0.25"})
    with pytest.raises(RuntimeError, match="prepared"):
        slowed.run()
    slowed.prepare()
    record = slowed.info["injected_slowdown"]
    assert record["calibrated_step_s"] == pytest.approx(step_s, rel=0.01)
    assert record["delay_s"] == pytest.approx(0.25 * step_s, rel=0.01)
    start = clock.now
    for _ in range(10):
        assert slowed.run() == "loss"
    assert (clock.now - start) / 10 == pytest.approx(1.25 * step_s, rel=0.01)
    assert slowed.info["optimizer"] == "sgd" and "injected_slowdown" not in step.info


def test_injected_slowdown_switch_is_off_unless_asked_and_rejects_typos():
    from twinbench import slowdown

    step = object()
    assert slowdown.from_env(step, {}) is step
    assert slowdown.from_env(step, {slowdown.ENV: "0"}) is step
    for bad in ("20%", "-0.1", "50"):
        with pytest.raises(ValueError, match=slowdown.ENV):
            slowdown.fraction_from_env({slowdown.ENV: bad})


# --------------------------------------------------------------------------------------
# scripts/gate_calibration.py on tiny fake inputs (the real runs take hours: the lead's job)
# --------------------------------------------------------------------------------------

def _calibration_script():
    return load_script("gate_calibration")


def test_calibration_script_counts_false_alarms_and_detections(tmp_path, capsys):
    script = _calibration_script()
    machine = fake_machine()
    for seed, (kind, count, slowdown) in enumerate((("baseline", BASELINE_RUNS, 0.0),
                                                    ("plain", 2 * CURRENT_RUNS, 0.0),
                                                    ("slow", 2 * CURRENT_RUNS, 0.2))):
        for i in range(count):
            write_runs(tmp_path / kind / f"{i:03d}", machine, 100 * seed + i, runs=1,
                       slowdown=slowdown, side=kind)
    assert script.main(["analyze", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"A/A: 0 of 2 false alarms (exit 1); 0 cannot resolve; {BASELINE_RUNS} baseline and " \
           f"{CURRENT_RUNS} current runs per decision" in out, out
    assert "slowed: 2 of 2 detections (exit 1)" in out, out


def test_calibration_script_dry_run_lists_the_runs_it_would_make(tmp_path, capsys):
    script = _calibration_script()
    assert script.main(["measure", "--out", str(tmp_path), "--baseline", "2", "--decisions", "1",
                        "--current", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 quick run(s) to go")
    assert out.count("--results=") == 6 and out.count("[slowed]") == 2
    assert "-m benchmark --quick --device cpu" in out
    # the baseline first, then plain and slowed-down runs alternately (drift touches both)
    order = [line.split("--results=")[1].split()[0] for line in out.splitlines()
             if "--results=" in line]
    assert [str(Path(d).relative_to(tmp_path)) for d in order] == [
        "baseline/000", "baseline/001", "plain/000", "slow/000", "plain/001", "slow/001"]


def test_calibration_script_paired_layout_and_decisions(tmp_path, capsys):
    """`measure --pairs`: per slot two plain runs and a slowed one, the slowed run last in
    even slots and first in odd ones. `analyze --pairs` pairs consecutive plain runs (A/A) and
    each slowed run with its plain neighbour, whatever the layout: on a machine whose speed
    swings 15% from slot to slot, no A/A decision alarms and every slowed one is caught.
    When the host changes half-way (a shared box's can, between sessions), the table says
    which machine each decision ran on and the summary adds a line per machine."""
    script = _calibration_script()
    assert script.main(["measure", "--out", str(tmp_path / "plan"), "--pairs", "2",
                        "--decisions", "1", "--dry-run"]) == 0
    order = [line.split("--results=")[1].split()[0].split("plan/")[1]
             for line in capsys.readouterr().out.splitlines() if "--results=" in line]
    assert order == ["plain/000", "plain/001", "slow/000", "slow/001", "plain/002", "plain/003"]
    rng, pairs = random.Random(5), 8
    hosts = [fake_machine(), fake_machine("Intel Xeon Processor")]
    for k in range(2 * pairs):            # 2 decisions of each kind, one on each host
        machine = hosts[k // pairs]
        level = rng.lognormvariate(0.0, 0.15)
        slot = [("plain", 2 * k, 0.0), ("plain", 2 * k + 1, 0.0), ("slow", k, 0.2)]
        for t, (kind, i, slowdown) in enumerate(slot if k % 2 == 0 else slot[2:] + slot[:2]):
            configs = [(c, m * level) for c, m in GATE_CONFIGS]
            directory = tmp_path / "runs" / kind / f"{i:03d}"
            write_runs(directory, machine, 1000 * k + t, runs=1, slowdown=slowdown,
                       drift=0.02, configs=configs, side=f"20261203T{3 * k + t:06d}Z")
    assert script.main(["analyze", "--out", str(tmp_path / "runs"), "--pairs", str(pairs)]) == 0
    out = capsys.readouterr().out
    assert "A/A: 0 of 2 false alarms (exit 1); 0 cannot resolve; 8 pairs per decision" in out, out
    assert "slowed: 2 of 2 detections (exit 1)" in out and "suite score flagged in 2" in out, out
    for host in hosts:
        assert f"machine {host['id']}: {host['cpu_model']}" in out, out
        assert f"A/A on machine {host['id']}: 0 of 1 false alarms" in out, out
        assert f"slowed on machine {host['id']}: 1 of 1 detections" in out, out
    decision_rows = [line for line in out.splitlines() if line.startswith("|")][2:]
    assert [hosts[0]["id"] in line for line in decision_rows] == [True, False, True, False], out


def test_calibration_resumes_on_another_host_only_at_a_decision_boundary(tmp_path, capsys):
    """A shared box's host can change between sessions. A paired measurement goes on on the
    new host from a decision boundary (each decision stays on one machine); inside a
    decision it stops with the way out, since the gate would refuse that decision; the
    baseline layout, whose decisions all share one baseline, stops on any change."""
    script, elsewhere = _calibration_script(), fake_machine("Another CPU")

    def finish(kind, i, t):
        run_dir = tmp_path / "paired" / kind / f"{i:03d}"
        write_runs(run_dir, elsewhere, t, runs=1, side=f"20261203T{t:06d}Z")
        (run_dir / script.paired_runs.FINISHED).write_text("")

    paired = ["measure", "--out", str(tmp_path / "paired"), "--pairs", "2", "--decisions", "2",
              "--dry-run"]
    for t, (kind, i) in enumerate([("plain", 0), ("plain", 1), ("slow", 0)]):   # slot 1 of 2
        finish(kind, i, t)
    assert script.main(paired) == 2
    err = capsys.readouterr().err
    assert "Another CPU" in err and "refuses a decision whose runs span two machines" in err \
        and "move the last 3 finished run(s)" in err, err
    for t, (kind, i) in enumerate([("slow", 1), ("plain", 2), ("plain", 3)], start=3):
        finish(kind, i, t)                                                     # slot 2: whole
    assert script.main(paired) == 0
    out, err = capsys.readouterr()
    assert "goes on here from a decision boundary" in err, err
    assert sum("--results=" in line for line in out.splitlines()) == 6, out
    baseline = tmp_path / "baseline-layout" / "baseline" / "000"
    write_runs(baseline, elsewhere, 9, runs=1)
    (baseline / script.paired_runs.FINISHED).write_text("")
    assert script.main(["measure", "--out", str(tmp_path / "baseline-layout"), "--dry-run"]) == 2
    assert "measure into a new --out here" in capsys.readouterr().err


def test_calibration_alternates_which_run_of_an_aa_pair_is_the_baseline(tmp_path):
    """A machine on which the second of two back-to-back runs is 20% slower (an order effect,
    not a change): were the earlier run always the baseline, every A/A decision would alarm.
    `analyze --pairs` balances the sides (two pairs one way, two the other), so the effect
    shows as spread, and no A/A decision exits 1."""
    script = _calibration_script()
    machine, pairs = fake_machine(), 8
    for i in range(4 * pairs):           # plain runs only: 2 A/A decisions
        write_runs(tmp_path / "plain" / f"{i:03d}", machine, i, runs=1, drift=0.02,
                   slowdown=0.2 if i % 2 else 0.0, side=f"20261203T{i:06d}Z")
    found = script.pairs_of(tmp_path)
    plain = [tmp_path / "plain" / f"{i:03d}" for i in range(4 * pairs)]
    assert found["A/A"][:4] == [(plain[0], plain[1]), (plain[2], plain[3]), (plain[5], plain[4]),
                                (plain[7], plain[6])] and not found["slowed"]
    decisions = script.paired_decisions(tmp_path, pairs)
    assert len(decisions) == 2 and all(d["exit"] != EXIT_REGRESSION for d in decisions), decisions
    # the control: the same runs with the earlier one always the baseline do alarm
    rows = script._rows
    assert all(run_gate(rows([a for a, _ in group]), rows([b for _, b in group]),
                        paired=True).exit_code == EXIT_REGRESSION
               for group in (list(zip(plain[0:16:2], plain[1:16:2])),
                             list(zip(plain[16::2], plain[17::2]))))


def test_calibration_drift_shows_a_slow_stretch_after_the_baseline(tmp_path, capsys):
    """9 plain runs whose middle three run 20% slow (a known drift): the middle third reads
    about 0.80 of the baseline, the other two about 1.00. The rounds (3% noise, 7 a run)
    imply a median's sd of 1.2533 x 3% / sqrt(7) = 1.4%; with the slow stretch taken out as
    the runs' common factor, neighbouring configurations' residuals do not correlate (were
    it left in, they would correlate near +1)."""
    script = _calibration_script()
    machine = fake_machine()
    write_runs(tmp_path / "baseline" / "000", machine, 1, runs=4, drift=0.002, side="base")
    for i in range(9):
        write_runs(tmp_path / "plain" / f"{i:03d}", machine, 10 + i, runs=1, drift=0.002,
                   slowdown=0.2 if 3 <= i < 6 else 0.0, side="plain")
    assert script.main(["drift", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = out[2:2 + len(GATE_CONFIGS)]   # below the header and its rule
    assert all(line.startswith("|") for line in lines) and not out[2 + len(GATE_CONFIGS)], out
    neighbours = out[-1]
    assert neighbours.startswith("neighbours in timing order: mean correlation"), out
    assert abs(float(neighbours.split("residuals ")[1].split()[0])) < 0.5, neighbours
    for line in lines:
        assert 0.010 < float(line.split("|")[10].strip().rstrip("%")) / 100 < 0.019, line
        thirds = [float(t) for t in line.split("|")[7].split("/")]
        # a run's median of 7 rounds at 3% CV is known to about 1.4%, a ratio of two such
        # medians to about 2%: +-0.06 is 3 sigma, and still keeps 0.80 and 1.00 apart
        assert abs(thirds[0] - 1) < 0.06 and abs(thirds[1] - 0.8) < 0.06 \
            and abs(thirds[2] - 1) < 0.06, line


# The CPU box's calibration, committed: each output next to the runs it came from is what the
# script makes of those runs today (analyze.md and analyze-suite-rule.md predate the suite
# score and the paired design; the docs quote them as history).
ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "reports/samples/cpu-box-gate-calibration"
CALIBRATION_OUTPUTS = [("runs.tar.gz", ["drift"], "drift.md")] + [
    ("runs.tar.gz", ["analyze", "--pairs", str(n)], f"analyze-paired-{n}.md") for n in (6, 8, 10)
] + [("paired-runs.tar.gz", ["analyze", "--pairs", "10"], "analyze-paired-acceptance-10.md")]


def _unpack(archive: str, into: Path) -> Path:
    with tarfile.open(CALIBRATION / archive) as tar:
        tar.extractall(into, filter="data")
    return into


@pytest.mark.parametrize("archive, command, output", CALIBRATION_OUTPUTS,
                         ids=[o for _, _, o in CALIBRATION_OUTPUTS])
def test_committed_calibration_outputs_are_what_the_committed_runs_give(
        archive, command, output, tmp_path, capsys):
    out = _unpack(archive, tmp_path)
    assert _calibration_script().main([command[0], "--out", str(out), *command[1:]]) == 0
    assert capsys.readouterr().out == (CALIBRATION / output).read_text(encoding="utf-8"), (
        f"{output} differs from `gate_calibration.py {' '.join(command)}` on {archive}: rerun it")


def test_methodology_acceptance_table_quotes_the_committed_decisions():
    """docs/methodology.md's table of the paired acceptance measurement is the committed
    analysis, kind by kind and machine by machine (the CPU box's host changed during the
    measurement): decisions, exits, the suite score, the medians; and the counts over both."""
    analysis = (CALIBRATION / "analyze-paired-acceptance-10.md").read_text(encoding="utf-8")
    table = [[cell.strip() for cell in line.strip("|").split("|")]
             for line in analysis.splitlines() if line.startswith("|") and "---" not in line]
    header, decisions = table[0], table[1:]
    machine_at = header.index("machine")
    doc = (ROOT / "docs/methodology.md").read_text(encoding="utf-8")

    def counts(chosen, suite_word):
        return (f"{sum(d[-1] == '0' for d in chosen)} | {sum(d[-1] == '1' for d in chosen)} | "
                f"{sum(d[-1] == '3' for d in chosen)} | {suite_word} in "
                f"{sum(d[-2] == suite_word for d in chosen)}")

    for kind, label, suite_word in (("A/A", "A/A", "pass"), ("slowed", "slowed 20%", "regression")):
        mine = [d for d in decisions if d[1] == kind]
        machines = list(dict.fromkeys(d[machine_at] for d in mine))
        assert len(machines) == 2, machines
        for machine in machines:
            chosen = [d for d in mine if d[machine_at] == machine]
            summary = next(line for line in analysis.splitlines()
                           if line.startswith(f"{kind} on machine {machine}:"))
            allowed, spread = re.findall(r"([\d.]+%) \(configurations\), ([\d.]+%) \(suite\)",
                                         summary)
            row = (f"| {len(chosen)} {label} | {machine} | {counts(chosen, suite_word)} | "
                   f"{allowed[1]} | {allowed[0]} | {spread[0]}, {spread[1]} |")
            assert row in doc, f"docs/methodology.md should hold the row {row!r}"
        row = f"| {len(mine)} {label} | both | {counts(mine, suite_word)} | - | - | - |"
        assert row in doc, f"docs/methodology.md should hold the row {row!r}"


# --------------------------------------------------------------------------------------
# `python -m reports spread`: the drift between runs, measured, and the runs a gate needs
# --------------------------------------------------------------------------------------

def test_spread_recovers_the_drift_between_runs_and_the_runs_it_takes(tmp_path, capsys):
    """20 runs with a known lognormal drift: the measured between-run spread lands near it
    (20 runs: about +-16% relative, 2 sigma), and a larger drift needs more current runs."""
    from reports.spread import current_runs_needed, spread_tables
    from twinbench.results import read_rows
    machine = fake_machine()
    calm = write_runs(tmp_path / "calm", machine, 3, runs=20, drift=0.02)
    (title, table), = spread_tables(read_rows([calm]))
    assert f"{len(GATE_CONFIGS)} configurations" in title
    spreads = [float(line[6].rstrip("%")) / 100 for line in table.rows]
    assert 0.013 < statistics.median(spreads) < 0.027, spreads
    assert current_runs_needed(0.03, 0.05, 8, 10) is None \
        or current_runs_needed(0.01, 0.05, 8, 10) <= current_runs_needed(0.03, 0.05, 8, 10)
    # no drift: the rank test's best p-value decides against a configuration's strictest
    # level, 0.05 x 0.5 / 8 = 0.0031: 1/C(13, 3) = 0.0035 is above it, 1/C(14, 4) = 0.001 below
    assert current_runs_needed(0.001, 0.05, 8, 10) == 4
    code, out, _ = run_cli(capsys, "spread", calm)
    assert code == EXIT_PASS and "between runs" in out


def test_spread_needs_two_runs(tmp_path, capsys):
    one = write_runs(tmp_path / "one", fake_machine(), 4, runs=1)
    code, _, err = run_cli(capsys, "spread", one)
    assert code == EXIT_INPUT_ERROR and "two or more runs" in err


# --------------------------------------------------------------------------------------
# scripts/paired_runs.py: the interleaved runs that `gate --paired` reads
# --------------------------------------------------------------------------------------

def test_paired_runs_alternate_which_build_goes_first(tmp_path, capsys):
    script = load_script("paired_runs")
    assert script.order(3) == [("baseline", 0), ("current", 0), ("current", 1),
                               ("baseline", 1), ("baseline", 2), ("current", 2)]
    assert script.main(["--baseline-ref", "HEAD", "--out", str(tmp_path), "--pairs", "2",
                        "--dry-run", "--", "-m", "benchmark", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "worktree add --detach" in out and "4 run(s) to go of 4" in out
    runs = [line for line in out.splitlines() if line.startswith("[")]
    assert [r.split("]")[0] for r in runs] == ["[baseline 1/2", "[current 1/2", "[current 2/2",
                                               "[baseline 2/2"]
    assert all("-m benchmark --quick" in r and "--results=" in r for r in runs)
    assert f"(in {tmp_path / 'baseline-tree'})" in runs[0]


def test_paired_runs_refuse_an_unknown_baseline_commit(tmp_path, capsys):
    script = load_script("paired_runs")
    assert script.main(["--baseline-ref", "no-such-ref-xyz", "--out", str(tmp_path)]) == 2
    assert "is not a commit of this repository" in capsys.readouterr().err
    assert not (tmp_path / "baseline-tree").exists()


def test_a_run_counts_only_once_its_session_finished(tmp_path, capsys):
    """A benchmark session that failed or was stopped leaves some configurations' rows: the
    run is not finished, so resuming moves those rows aside (kept, never gated) and runs it
    again; a session that exits 0 marks its run finished, and resuming skips it. The
    calibration's analysis counts only marked runs where any run is marked (older sets, with
    no marks, count every directory of rows)."""
    import sys
    script = load_script("paired_runs")
    out = tmp_path / "job"
    run_dir = out / "current" / "000"
    run_dir.mkdir(parents=True)
    (run_dir / "partial.json").write_text("{}")        # a stopped session's rows
    write = (f"import pathlib; d = pathlib.Path({str(run_dir)!r}); d.mkdir(exist_ok=True); "
             f"(d / 'row.json').write_text('{{}}')")   # as pytest makes its --results directory
    assert script.run_session([sys.executable, "-c", write + "; raise SystemExit(1)"],
                              run_dir, out, tmp_path, {}) == 1
    assert not script.finished(run_dir)
    [aside] = (out / "unfinished").iterdir()
    assert (aside / "partial.json").is_file() and aside.name.startswith("current-000-")
    assert script.run_session([sys.executable, "-c", write], run_dir, out, tmp_path, {}) == 0
    assert script.finished(run_dir) and sorted(p.name for p in run_dir.iterdir()) == [
        ".finished", "row.json"]
    assert len(list((out / "unfinished").iterdir())) == 2   # the failed attempt's row too
    capsys.readouterr()
    # resuming: the finished run is skipped
    assert script.main(["--baseline-ref", "HEAD", "--out", str(out), "--pairs", "1",
                        "--dry-run"]) == 0
    runs = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [r.split("]")[0] for r in runs] == ["[baseline 1/1"]
    calibration = _calibration_script()
    assert [d.name for d in calibration._run_dirs(out / "current")] == ["000"]
    unmarked = out / "current" / "001"
    unmarked.mkdir()
    (unmarked / "row.json").write_text("{}")
    assert [d.name for d in calibration._run_dirs(out / "current")] == ["000"]
    (run_dir / script.FINISHED).unlink()                # a set measured before the marks
    assert [d.name for d in calibration._run_dirs(out / "current")] == ["000", "001"]
    (out / "plain" / "000").mkdir(parents=True)
    (out / "plain" / "000" / script.FINISHED).write_text("")
    (out / "slow" / "000").mkdir(parents=True)
    (out / "slow" / "000" / "partial.json").write_text("{}")
    todo = calibration.plan(out, 0, 1, 1, pairs=None)
    assert [str(d.relative_to(out)) for d, _ in todo] == ["slow/000"]
