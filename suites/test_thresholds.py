"""Accuracy gates and the matrix verdict (twinbench/thresholds.py) on simulated seeds:
a gate that gets stricter, not looser, as seeds are added, and an equivalence test whose
error rates are what it promises. Fast: NumPy draws from fixed seeds, no training.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from twinbench import thresholds as th

SIGMA = th.SEED_STD
GATE = 0.63
TRIALS = 20_000       # simulated gate decisions per seed count: sampling error <= 0.36%


def _fail_rate(rng, n, true_mean, rule):
    draws = true_mean + SIGMA * rng.standard_normal((TRIALS, n))
    return float(np.mean([not rule(list(row)) for row in draws]))


def _ucb_rule(accuracies):
    return th.accuracy_gate(accuracies, GATE).passed


def _within(rate, expected):
    se = math.sqrt(max(expected * (1 - expected), 1e-4) / TRIALS)
    return abs(rate - expected) <= 4 * se


def test_one_seed_still_decides_with_the_prior_spread():
    z = th._NORMAL.inv_cdf(th.GATE_CONFIDENCE)
    gate = th.accuracy_gate([0.66], GATE, source="cifar10-jpeg")
    assert gate.n == 1 and gate.std is None
    assert gate.upper_bound == pytest.approx(0.66 + z * th.prior_seed_std("cifar10-jpeg"))
    assert th.prior_seed_std("cifar10-jpeg") == th.SEED_STD_BY_SOURCE["cifar10-jpeg"] != SIGMA
    assert gate.passed
    # one seed: fails only below the threshold by more than z prior standard deviations
    assert not th.accuracy_gate([GATE - 1.01 * z * SIGMA], GATE).passed
    assert th.accuracy_gate([GATE - 0.99 * z * SIGMA], GATE).passed
    # the canonical TensorFlow reference (71% published) passes its 70% gate on one seed
    assert th.accuracy_gate([0.71], 0.70, source="cifar10").passed
    assert "prior" in gate.rule


def test_a_given_seed_std_and_a_too_small_prior_are_said():
    gate = th.accuracy_gate([0.60, 0.66, 0.72], GATE, seed_std=0.005)
    assert gate.seed_std == 0.005 and "given" in gate.rule and "update the prior" in gate.rule
    with pytest.raises(ValueError, match="no accuracies"):
        th.accuracy_gate([], GATE)


def test_false_fail_rate_one_point_above_the_gate_falls_as_seeds_are_added():
    """The upper-bound gate, simulated: a recipe whose true mean is one point above its gate
    fails less often with every seed added, as false_fail_rate says (within 4 standard
    errors); the old rule, mean - 1 x sample std, failed it MORE often with more seeds."""
    rng = np.random.default_rng(21)
    rates = {}
    # Seed counts whose rates 20,000 trials resolve (about 130, 50, 20 and 5 failures expected;
    # at 10 seeds the rate is 1e-5, below what the simulation can order).
    for n in (1, 2, 3, 5):
        rates[n] = _fail_rate(rng, n, GATE + 0.01, _ucb_rule)
        assert _within(rates[n], th.false_fail_rate(n, above=0.01, seed_std=SIGMA)), (n, rates[n])
    assert rates[1] > rates[2] > rates[3] > rates[5], rates

    def old_rule(acc):
        return np.mean(acc) - np.std(acc, ddof=1) >= GATE
    assert _fail_rate(rng, 3, GATE + 0.01, old_rule) < _fail_rate(rng, 10, GATE + 0.01, old_rule)


def test_power_against_a_two_point_regression_grows_with_seeds():
    rng = np.random.default_rng(22)
    caught = {n: _fail_rate(rng, n, GATE + 0.01 - 0.02, _ucb_rule) for n in (1, 3, 10)}
    for n, rate in caught.items():
        assert _within(rate, th.regression_power(n, above=0.01, drop=0.02, seed_std=SIGMA)), n
    assert caught[1] < caught[3] < caught[10]


def test_gate_table_lists_every_source_and_seed_count():
    table = th.gate_table((1, 10))
    assert {(r["source"], r["seeds"]) for r in table} == {(s, n) for s in th.THRESHOLDS
                                                          for n in (1, 10)}
    assert all(0 < r["false_fail"] < 1 and 0 < r["power"] <= 1 for r in table)


def test_summarize_keeps_its_fields_and_gates_on_the_upper_bound():
    summary = th.summarize([0.66, 0.65, 0.67], GATE, source="cifar10-jpeg")
    assert summary["gated_value"] == pytest.approx(
        th.accuracy_gate([0.66, 0.65, 0.67], GATE, source="cifar10-jpeg").upper_bound)
    assert summary["n"] == 3 and summary["std"] == pytest.approx(0.01)
    assert th.summarize([0.66])["std"] is None


# --------------------------------------------------------------------------------------
# the matrix: paired by seed, two one-sided tests
# --------------------------------------------------------------------------------------

def test_student_t_quantiles_match_tables():
    for p, df, expected in [(0.95, 1, 6.3138), (0.95, 2, 2.9200), (0.95, 9, 1.8331),
                            (0.975, 30, 2.0423), (0.5, 4, 0.0)]:
        assert th.t_quantile(p, df) == pytest.approx(expected, abs=1e-3)


def test_matrix_verdicts_and_missing_seeds():
    same = th.matrix_verdict({s: 0.66 + 0.001 * s for s in range(5)},
                             {s: 0.661 + 0.001 * s for s in range(5)} | {7: 0.6})
    assert same.verdict == "equivalent" and same.n_pairs == 5
    assert same.missing_seeds == {"tf": [7], "torch": []}
    apart = th.matrix_verdict({s: 0.69 + 0.002 * (s % 2) for s in range(4)},
                              {s: 0.66 + 0.002 * (s % 3) for s in range(4)})
    assert apart.verdict == "different" and apart.ci_low > 0
    one = th.matrix_verdict({0: 0.66}, {0: 0.665})      # one pair: prior spread, too wide
    assert one.verdict == "undetermined" and one.diff_std == pytest.approx(math.sqrt(2) * SIGMA)
    assert one.seeds_needed == th.seeds_needed(math.sqrt(2) * SIGMA) == 25
    with pytest.raises(ValueError, match="no seed ran in both"):
        th.matrix_verdict({0: 0.6}, {1: 0.6})


@pytest.mark.parametrize("true_gap,expected_verdict,expected_rate", [
    (0.0, "equivalent", th.MATRIX_POWER),   # seeds_needed pairs: equivalent with 80% power
    (0.01, "equivalent", th.MATRIX_ALPHA),  # a gap AT the margin: called equivalent <= 5%
])
def test_matrix_error_rates_on_simulated_pairs(true_gap, expected_verdict, expected_rate):
    """Known spread (seed_std given): the equivalence verdict's power at seeds_needed and
    its false-equivalence rate at the margin, within their sampling error. The normal
    approximation in seeds_needed makes the power slightly conservative."""
    diff_std = math.sqrt(2) * SIGMA
    n = th.seeds_needed(diff_std)
    rng = np.random.default_rng(23)
    trials = 4000
    hits = 0
    for _ in range(trials):
        torch = 0.66 + SIGMA * rng.standard_normal(n)
        tf = 0.66 + true_gap + SIGMA * rng.standard_normal(n)
        verdict = th.matrix_verdict(dict(enumerate(tf)), dict(enumerate(torch)), seed_std=SIGMA)
        hits += verdict.verdict == expected_verdict
    rate = hits / trials
    se = math.sqrt(expected_rate * (1 - expected_rate) / trials)
    if true_gap == 0.0:
        assert rate >= expected_rate - 4 * se, rate
    else:
        assert rate <= expected_rate + 4 * se, rate


def test_chi_square_quantiles_match_tables():
    # printed tables (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.4): lower and upper 5% points
    for df, low, high in ((4, 0.711, 9.488), (9, 3.325, 16.919), (14, 6.571, 23.685)):
        assert th.chi2_quantile(0.05, df) == pytest.approx(low, abs=1e-3)
        assert th.chi2_quantile(0.95, df) == pytest.approx(high, abs=1e-3)


@pytest.mark.parametrize("n", [5, 10])
def test_a_derived_gate_fails_one_new_healthy_seed_at_most_its_rate(n):
    """The derivation's promise, simulated: measure n seeds of a recipe, derive the gate (before
    rounding), then gate ONE new seed of the same recipe; across 200,000 such trials it fails
    DERIVED_FALSE_FAIL of the time (the prediction bound is exact for normal seeds). A bound
    without the mean's own uncertainty (sqrt(1 + 1/n)) fails 0.14% at n = 5 (caught here)."""
    rng = np.random.default_rng(11 + n)
    trials, mu, sigma, prior = 200_000, 0.69, 0.008, 0.008
    seeds = rng.normal(mu, sigma, size=(trials, n))
    mean, std = seeds.mean(axis=1), seeds.std(axis=1, ddof=1)
    gate = th.derive_threshold(seeds[0], prior)         # the formula, checked against numpy
    t = th.t_quantile(1 - th.DERIVED_FALSE_FAIL, n - 1)
    z = th._NORMAL.inv_cdf(th.GATE_CONFIDENCE)
    assert gate.raw == pytest.approx(mean[0] - t * std[0] * math.sqrt(1 + 1 / n) + z * prior)
    raw = mean - t * std * math.sqrt(1 + 1 / n) + z * prior
    new_seed = rng.normal(mu, sigma, size=trials)
    rate = float(np.mean(new_seed + z * prior < raw))   # accuracy_gate's rule at one seed
    se = math.sqrt(th.DERIVED_FALSE_FAIL * (1 - th.DERIVED_FALSE_FAIL) / trials)
    assert abs(rate - th.DERIVED_FALSE_FAIL) < 4 * se, rate
    assert gate.threshold <= gate.raw < gate.threshold + th.GATE_STEP


def test_a_gate_needs_five_seeds():
    with pytest.raises(ValueError, match="at least 5 seeds"):
        th.derive_threshold([0.69, 0.70, 0.68, 0.69], 0.008)


def _derive_gates_script():
    from fixtures.scripts import load_script
    return load_script("derive_gates")


SEED_ROWS = ("reports/samples/cpu-box-seeds", "reports/samples/cpu-box-resnet8",
             "reports/samples/cpu-box-threads", "reports/samples/cpu-box-arm-seeds")


def test_the_jpeg_gates_are_what_the_committed_seeds_derive(capsys):
    """The JPEG copy's thresholds and prior seed std in twinbench/thresholds.py are exactly
    what scripts/derive_gates.py derives from the committed seed rows: editing one without
    the other fails here."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    code = _derive_gates_script().main([str(root / d) for d in SEED_ROWS])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "cifar10-jpeg" in out.out


def _seed_row(seed, accuracy, threads=1, framework="tf"):
    return {"kind": "accuracy", "comparison": None, "data": {"source": "cifar10-jpeg"},
            "recipe": "keras_cnn_adam", "framework": framework, "seed": seed,
            "final_accuracy": accuracy, "backend": {"threads": threads}}


def test_derive_gates_refuses_a_seed_gathered_twice_with_two_results():
    script = _derive_gates_script()
    with pytest.raises(ValueError, match="seed 3 at 1 thread.*different accuracies"):
        script.seed_groups([_seed_row(3, 0.61), _seed_row(3, 0.62)])


def test_derive_gates_counts_a_replayed_seed_once_and_each_thread_count_as_a_run():
    """A deterministic rerun (same seed, threads, accuracy) is one run; the same seed at
    another thread count is another run."""
    script = _derive_gates_script()
    groups = script.seed_groups([_seed_row(3, 0.61), _seed_row(3, 0.61), _seed_row(3, 0.64, 2)])
    assert groups == {("cifar10-jpeg", "keras_cnn_adam", "tf"): {(3, 1): 0.61, (3, 2): 0.64}}


def test_derive_gates_pools_thread_counts_unless_their_spreads_differ():
    """Runs at two thread counts are one population, gated as a whole, while their spreads are
    compatible (the per-thread-count rows are checks); a clearly wider spread at one thread
    count (as CI's could be) makes its own, lower gate count. The pooled spread is taken
    within thread counts (a shift of the mean between them is not seed spread)."""
    script = _derive_gates_script()
    calm = [0.69, 0.692, 0.688, 0.691, 0.689, 0.690]          # std 0.15 points
    alike = [0.691, 0.689, 0.6915, 0.6885, 0.690, 0.6905]      # about the same spread
    wide = [0.70, 0.67, 0.71, 0.66, 0.69, 0.68]               # std 1.9 points, same mean

    def derived(other):
        rows = [_seed_row(s, a, 1) for s, a in enumerate(calm)] + \
            [_seed_row(s, a + 0.02, 2) for s, a in enumerate(other)]   # shifted by 2 points
        return script.derive(script.seed_groups(rows))["cifar10-jpeg"]

    for other, differ in ((alike, False), (wide, True)):
        d = derived(other)
        per = {k[3]: g.threshold for k, g in d["gates"].items()}
        assert set(per) == {"1", "2", "1+2"}
        assert d["sets_gate"][("cifar10-jpeg", "keras_cnn_adam", "tf", "1+2")]
        assert d["sets_gate"][("cifar10-jpeg", "keras_cnn_adam", "tf", "2")] is differ
        expected = min(per.values()) if differ else per["1+2"]
        assert d["recipes"]["keras_cnn_adam"] == expected
        (ratio, p), = [v[1] for v in d["spreads"].values()]
        assert (p < script.SPREADS_DIFFER) is differ
        within = th.pooled_std([calm, [a + 0.02 for a in other]])[0]
        assert d["pooled"] == pytest.approx(within)
    assert derived(wide)["recipes"]["keras_cnn_adam"] < derived(alike)["recipes"]["keras_cnn_adam"]


def test_spread_ratio_test_matches_the_f_distribution():
    """Pinned against SciPy's F distribution (scipy.stats.f.sf(3.3502540, 6, 9) x 2 = 0.10187,
    computed 2026-12-02): not a dependency, so the figure is written here."""
    a = [0.7033, 0.6975, 0.6855, 0.687, 0.6937, 0.6959, 0.6819, 0.6895, 0.6992, 0.6753]
    b = [0.6967, 0.668, 0.688, 0.7014, 0.7091, 0.6953, 0.669]
    ratio, p = th.spread_ratio_test(a, b)
    assert ratio == pytest.approx(3.3502540, rel=1e-6)
    assert p == pytest.approx(0.10187091, rel=1e-5)
    assert th.spread_ratio_test(b, a) == (ratio, p)
    assert th.spread_ratio_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])[1] == pytest.approx(1.0)


def test_the_header_says_what_n_seeds_resolve():
    from fixtures.session import seeds_line
    one, many = seeds_line(1, "cifar10-jpeg"), seeds_line(14, "cifar10-jpeg")
    sigma = th.prior_seed_std("cifar10-jpeg")
    assert f"{th.regression_power(1, seed_std=sigma):.0%} of the" in one
    assert f"{th.regression_power(14, seed_std=sigma):.0%} of the" in many
    needed = th.seeds_needed(math.sqrt(2) * sigma)
    assert f"from {needed} seeds" in one and f"{sigma:.1%}" in one
    assert "1.2%" in seeds_line(1, "cifar10")    # canonical data: the unmeasured prior
