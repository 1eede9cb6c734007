"""reports/attribution.py: the recipe-vs-framework sentence."""
from __future__ import annotations

from reports.attribution import attribution_sentences

LABELS = {"m1": "CPU box"}


def row(framework, arch, recipe, accuracy, comparison="matrix", seed=0):
    return {"kind": "accuracy", "comparison": comparison, "machine": {"id": "m1"},
            "device": "cpu", "arch": arch, "recipe": recipe, "framework": framework,
            "final_accuracy": accuracy, "seed": seed}


ROWS = [row("tf", "keras_cnn", "keras_cnn_adam", 0.70), row("torch", "keras_cnn", "keras_cnn_adam", 0.68),
        row("tf", "lenet", "lenet_sgd", 0.61), row("torch", "lenet", "lenet_sgd", 0.60),
        # a reference-pair run is not part of the matrix and must not move its numbers
        row("tf", "keras_cnn", "keras_cnn_adam", 0.10, comparison=None)]


def test_sentence_splits_the_gap_exactly():
    [sentence] = attribution_sentences(ROWS, LABELS)
    assert "here 10.0 points" in sentence                 # 0.70 - 0.60
    assert "+8.0 points of recipe" in sentence            # torch: 0.68 - 0.60
    assert "+2.0 points of framework" in sentence         # keras_cnn_adam: 0.70 - 0.68
    assert "published 7.3 points" in sentence
    assert "within ±5.1 points" in sentence               # 1 seed: 3 x 1.2 x sqrt(2)


def test_no_sentence_without_the_runs_it_needs():
    assert attribution_sentences(ROWS[:2], LABELS) == []
    assert attribution_sentences(ROWS[-1:], LABELS) == []


def test_a_further_published_program_without_matrix_runs_changes_nothing(monkeypatch):
    import dataclasses

    from reports import attribution
    extra = dataclasses.replace(attribution.RECIPES["keras_cnn_adam"], name="other_tf_program",
                                arch="other_arch", reference_accuracy=0.85)
    monkeypatch.setitem(attribution.RECIPES, extra.name, extra)
    [sentence] = attribution_sentences(ROWS, LABELS)
    assert "published 7.3 points" in sentence
