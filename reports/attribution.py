"""The fair-comparison matrix, summarized: per architecture x recipe, both frameworks' final
accuracy from shared initial weights and data order, their gap, and one sentence splitting the
reference programs' gap into recipe and framework.

The published programs compare TensorFlow running its recipe T with torch running its recipe
P (twinbench/recipes.py: keras_cnn_adam, 71%, and lenet_sgd, 63.67%). With the matrix that gap
splits exactly:
    tf(T) - torch(P)
        = [tf(T) - torch(T)]      framework: same network and recipe
        + [torch(T) - torch(P)]   recipe: network and training, one framework
"""
from __future__ import annotations

import statistics

from reports.tables import Table, fmt_percent
from twinbench.recipes import RECIPES


def _reference_pair():
    """The published programs: the TensorFlow recipe and the torch recipe, from the recipe
    registry (each recipe names its published framework and accuracy)."""
    by_framework = {r.reference_framework: r for r in RECIPES.values() if r.reference_framework}
    return by_framework.get("tf"), by_framework.get("torch")
HEADERS = ["machine", "device", "arch", "recipe", "seeds", "tf final", "torch final",
           "tf - torch"]


def _matrix_means(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """(machine id, device, arch, recipe) -> {framework: mean final accuracy}."""
    acc: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        if r["kind"] == "accuracy" and r.get("comparison") == "matrix":
            key = (r["machine"]["id"], r["device"], r["arch"], r["recipe"])
            acc.setdefault(key, {}).setdefault(r["framework"], []).append(r["final_accuracy"])
    return {k: {fw: statistics.fmean(v) for fw, v in d.items()} for k, d in acc.items()}


def matrix_table(rows: list[dict], labels: dict[str, str]) -> Table | None:
    means = _matrix_means(rows)
    if not means:
        return None
    counts: dict[tuple, int] = {}
    for r in rows:
        if r["kind"] == "accuracy" and r.get("comparison") == "matrix":
            key = (r["machine"]["id"], r["device"], r["arch"], r["recipe"])
            counts[key] = counts.get(key, 0) + (r["framework"] == "tf")
    lines = []
    for key in sorted(means):
        tf, torch = means[key].get("tf"), means[key].get("torch")
        gap = f"{100 * (tf - torch):+.2f} points" if tf is not None and torch is not None else "—"
        lines.append([labels[key[0]], key[1], key[2], key[3], str(counts[key]),
                      fmt_percent(tf, 2), fmt_percent(torch, 2), gap])
    return Table(HEADERS, lines, ["left"] * 4 + ["right"] * 4)


def attribution_sentences(rows: list[dict], labels: dict[str, str]) -> list[str]:
    """One sentence per machine and device where the matrix has the three runs it needs."""
    means = _matrix_means(rows)
    tf_ref, torch_ref = _reference_pair()
    if tf_ref is None or torch_ref is None:
        return []
    out = []
    for (mid, device) in sorted({(k[0], k[1]) for k in means}):
        tf_pair = means.get((mid, device, tf_ref.arch, tf_ref.name), {})
        torch_pair = means.get((mid, device, torch_ref.arch, torch_ref.name), {})
        if "tf" not in tf_pair or "torch" not in tf_pair or "torch" not in torch_pair:
            continue
        framework = tf_pair["tf"] - tf_pair["torch"]
        recipe = tf_pair["torch"] - torch_pair["torch"]
        published = tf_ref.reference_accuracy - torch_ref.reference_accuracy
        out.append(
            f"On {labels[mid]} ({device}), the reference programs' gap (published "
            f"{100 * published:.1f} points, {100 * tf_ref.reference_accuracy:.4g}% vs "
            f"{100 * torch_ref.reference_accuracy:.4g}%; here {100 * (framework + recipe):.1f} "
            f"points) is {100 * recipe:+.1f} points of recipe ({tf_ref.name} vs {torch_ref.name}, "
            f"both in torch) and {100 * framework:+.1f} points of framework (TensorFlow vs torch "
            f"on {tf_ref.name} from the same initial weights and data order).")
    return out
