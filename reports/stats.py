"""Robust statistics on benchmark rounds.

Timed rounds have occasional outliers (a background job, a page fault storm), so everything
here is median-based: one slow round moves neither the centre nor the spread much.
"""
from __future__ import annotations

import functools
import itertools
import math
import statistics

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_SD = 1.4826
# Asymptotic standard error of a sample median for normal data: sqrt(pi/2) * sd / sqrt(n).
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)


def median(values) -> float:
    return statistics.median(values)


def mad(values) -> float:
    """Median absolute deviation from the median."""
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


def relative_spread(values) -> float:
    """Robust relative dispersion of single rounds: 1.4826 * MAD / median (a robust CV)."""
    return MAD_TO_SD * mad(values) / statistics.median(values)


def relative_median_se(values) -> float:
    """Relative standard error of the median of `values`: 1.2533 * relative_spread / sqrt(n)."""
    return MEDIAN_SE_FACTOR * relative_spread(values) / math.sqrt(len(values))


def iqr_percent(values) -> float | None:
    """Interquartile range as a percentage of the median; None with fewer than two rounds."""
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return 100.0 * (q3 - q1) / statistics.median(values)


# -- run-level tests (the regression gate) ---------------------------------------------------
# A run's median is one replicate: rounds inside one run share the run's clocks, thermals and
# neighbours, so they say nothing about the drift between runs (docs/methodology.md#regression-gate).

def log_spread(values) -> float | None:
    """Sample standard deviation (ddof=1) of log(values): the relative spread between runs.
    None with fewer than two values."""
    if len(values) < 2:
        return None
    return statistics.stdev(math.log(v) for v in values)


@functools.lru_cache(maxsize=None)
def _u_null_counts(m: int, n: int) -> tuple[int, ...]:
    """counts[u] = number of the C(m+n, n) equally likely orderings of m baseline and n current
    values (no ties) in which exactly u (baseline, current) pairs have current > baseline."""
    if m == 0 or n == 0:
        return (1,)
    # The largest value is either a current one (it beats all m baseline values) or a
    # baseline one (it beats no current value): the Mann-Whitney recursion.
    with_current = _u_null_counts(m, n - 1)
    with_baseline = _u_null_counts(m - 1, n)
    counts = [0] * (m * n + 1)
    for u, c in enumerate(with_current):
        counts[u + m] += c
    for u, c in enumerate(with_baseline):
        counts[u] += c
    return tuple(counts)


def mann_whitney_u(baseline, current) -> float:
    """U = number of (baseline, current) pairs with current > baseline (ties count one half).
    Small U: the current values sit below the baseline ones (slower)."""
    return sum(1.0 if c > b else 0.5 if c == b else 0.0 for b in baseline for c in current)


def slower_p_value(baseline, current) -> float:
    """Exact one-sided Mann-Whitney p-value for "current is slower than baseline".

    Valid for any continuous distribution of the run figures (only exchangeability under the
    null is assumed): under "no change" every split of the m + n runs into baseline and current
    is equally likely. With ties the exact distribution of U over all splits is enumerated
    (ties between run medians of a continuous timing are rare)."""
    m, n = len(baseline), len(current)
    if m == 0 or n == 0:
        raise ValueError("both sides need at least one run")
    u = mann_whitney_u(baseline, current)
    pooled = [*baseline, *current]
    if len(set(pooled)) == len(pooled):
        counts = _u_null_counts(m, n)
        return sum(counts[: int(u) + 1]) / math.comb(m + n, n)
    total = hits = 0
    for chosen in itertools.combinations(range(m + n), n):
        picked = set(chosen)
        cur = [pooled[i] for i in chosen]
        base = [pooled[i] for i in range(m + n) if i not in picked]
        total += 1
        hits += mann_whitney_u(base, cur) <= u
    return hits / total


def smallest_p_value(m: int, n: int) -> float:
    """The smallest p-value m baseline and n current runs can give: every current run below
    every baseline run, one split out of C(m+n, n)."""
    return 1 / math.comb(m + n, n)


def critical_u(m: int, n: int, level: float) -> int | None:
    """The largest U whose exact one-sided p-value is <= level; None when even U = 0 is not."""
    counts = _u_null_counts(m, n)
    total = math.comb(m + n, n)
    cumulative, best = 0, None
    for u, c in enumerate(counts):
        cumulative += c
        if cumulative / total > level:
            break
        best = u
    return best


def holm(p_values: dict, alpha: float, weights: dict | None = None) -> dict:
    """Holm's step-down correction: key -> rejected, with family-wise error rate <= alpha
    whatever the dependence between the tests. Unweighted, the i-th smallest p (0-based) of k
    is compared with alpha / (k - i); the first one that fails stops the rejections. Weighted
    (Holm 1979, weights > 0): hypotheses are taken in order of p / weight and each is compared
    with alpha x its weight / the total weight of those not yet rejected."""
    weights = weights or dict.fromkeys(p_values, 1.0)
    ordered = sorted(p_values, key=lambda key: p_values[key] / weights[key])
    rejected = dict.fromkeys(p_values, False)
    remaining = sum(weights[key] for key in p_values)
    for key in ordered:
        if p_values[key] > alpha * weights[key] / remaining:
            break
        rejected[key] = True
        remaining -= weights[key]
    return rejected


# -- paired runs (baseline and current interleaved in one job) ---------------------------------

def _midranks(values) -> list[float]:
    """Ranks 1..n of values, ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@functools.lru_cache(maxsize=None)
def _signed_rank_null_counts(doubled_ranks: tuple[int, ...]) -> dict[int, int]:
    """counts[s] = number of the 2^n equally likely sign patterns whose positive items' doubled
    ranks sum to s (doubled, so that midranks of ties stay integers)."""
    counts = {0: 1}
    for r in doubled_ranks:
        grown: dict[int, int] = {}
        for s, c in counts.items():
            grown[s] = grown.get(s, 0) + c            # this item negative
            grown[s + r] = grown.get(s + r, 0) + c    # this item positive
        counts = grown
    return counts


def slower_paired_p_value(differences) -> float:
    """Exact one-sided Wilcoxon signed-rank p-value for "current is slower", from the paired
    differences log(current run / its baseline run) (negative: slower).

    Under "no change" each pair's two runs are exchangeable (which of the two came from the
    baseline is a coin toss as far as the timings go), so every sign pattern of the
    differences is equally likely: the p-value is the share of the 2^n patterns whose W+ (the
    rank sum of the positive differences, ranked by size) is at most the observed one. Valid
    for any distribution symmetric under that exchange, at any n; ties take midranks and
    zero differences are dropped (Wilcoxon's convention)."""
    d = [x for x in differences if x != 0]
    if not d:
        return 1.0
    ranks = [int(round(2 * r)) for r in _midranks([abs(x) for x in d])]   # doubled
    doubled = tuple(sorted(ranks))
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    counts = _signed_rank_null_counts(doubled)
    return sum(c for s, c in counts.items() if s <= observed) / 2 ** len(d)


def smallest_paired_p_value(n: int) -> float:
    """The smallest p-value n pairs can give: every current run slower than its baseline run."""
    return 1 / 2 ** n


def critical_w(n: int, level: float) -> int | None:
    """The largest W+ (rank sum of the positive differences, no ties) whose exact one-sided
    p-value is <= level; None when even W+ = 0 is not."""
    counts = _signed_rank_null_counts(tuple(range(2, 2 * n + 1, 2)))
    cumulative, best = 0, None
    for doubled in sorted(counts):
        cumulative += counts[doubled]
        if cumulative / 2 ** n > level:
            break
        best = doubled // 2
    return best
