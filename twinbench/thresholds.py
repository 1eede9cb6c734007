"""Accuracy gates, one table keyed by data source, and the statistics behind them.

Canonical CIFAR-10: the published programs report 71% (TensorFlow, keras_cnn_adam) and
63.67% (torch, lenet_sgd); the gates are the brief's 70% and 60%.
The JPEG copy (../shared/datasets/cifar10-jpeg): pixels re-encoded at about quality 75, so
the same recipes land a few points lower. Its README gives the independent runs (keras_cnn_adam
65.1-66.5% in TensorFlow and 66.8-68.9% in torch; lenet_sgd 59.6-62.2%) and derives the gates
as about three standard deviations under the measured means: 63% and 58%.
An unknown source has no threshold: never a silent default.
"""
from __future__ import annotations

import math

THRESHOLDS: dict[str, dict[str, float]] = {
    "cifar10": {"keras_cnn_adam": 0.70, "lenet_sgd": 0.60},
    "cifar10-jpeg": {"keras_cnn_adam": 0.63, "lenet_sgd": 0.58},
}

# With N >= 3 seeds the gate is on mean - K_STD * std (sample std, ddof=1): the recipe must
# clear the threshold by one run-to-run standard deviation, so a lucky seed cannot carry a
# recipe whose typical run is below the gate, and an unlucky one cannot sink a good recipe.
K_STD = 1.0
MIN_SEEDS_FOR_STD = 3
TEST_IMAGES = 10_000


class NoThreshold(LookupError):
    pass


def threshold(source_name: str, recipe: str) -> float:
    try:
        table = THRESHOLDS[source_name]
    except KeyError:
        raise NoThreshold(f"data source {source_name!r} has no accuracy thresholds (known: "
                          f"{', '.join(THRESHOLDS)}); add a row to twinbench/thresholds.py with "
                          "its derivation before gating on it") from None
    try:
        return table[recipe]
    except KeyError:
        raise NoThreshold(f"recipe {recipe!r} has no threshold for data source "
                          f"{source_name!r}") from None


def wilson_interval(accuracy: float, n: int = TEST_IMAGES, z: float = 1.96) -> tuple[float, float]:
    """95% interval of one run's accuracy measured on n test images (binomial, Wilson)."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summarize(accuracies: list[float]) -> dict:
    """mean, std (ddof=1; None for one run), min, max and the value the gate compares."""
    n = len(accuracies)
    if n == 0:
        raise ValueError("no accuracies to summarize")
    mean = sum(accuracies) / n
    std = (math.sqrt(sum((a - mean) ** 2 for a in accuracies) / (n - 1)) if n > 1 else None)
    gated = mean - K_STD * std if n >= MIN_SEEDS_FOR_STD else min(accuracies)
    return {"n": n, "mean": mean, "std": std, "min": min(accuracies), "max": max(accuracies),
            "gated_value": gated,
            "gate_rule": (f"mean - {K_STD:g}*std" if n >= MIN_SEEDS_FOR_STD else
                          "every run (fewer than 3 seeds: no std to speak of)")}


# -- the fair-comparison matrix ---------------------------------------------------------------
# Seed-to-seed standard deviation of one recipe's final-epoch accuracy, from the independent
# runs in ../shared/datasets/cifar10-jpeg/README.md and FACTS.md: keras_cnn_adam in TensorFlow
# 66.5/65.1/66.0 (std 0.71 points), in torch 68.9/66.8/68.6/66.8 (1.14), lenet_sgd in torch
# 60.4/60.6/62.2/59.6/61.1/60.7 (0.85). We take the largest, rounded up: 1.2 points.
SEED_STD = 0.012
# Two frameworks that compute the same function differ, run to run, like two seeds of one
# framework: their difference has std sqrt(2) * SEED_STD, and a mean over N seeds per side
# sqrt(2 / N) * SEED_STD. The matrix asserts |gap| <= MATRIX_K * that (a 3-sigma band: a
# framework effect must exceed what reseeding alone produces to fail).
MATRIX_K = 3.0


def matrix_gap_bound(seeds_per_framework: int) -> float:
    return MATRIX_K * SEED_STD * math.sqrt(2.0 / seeds_per_framework)
