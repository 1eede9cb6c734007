"""Robust statistics on benchmark rounds.

Timed rounds have occasional outliers (a background job, a page fault storm), so everything
here is median-based: one slow round moves neither the centre nor the spread much.
"""
from __future__ import annotations

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
