"""reports/verdict.py: the report's first section, TensorFlow vs torch, from the rows alone."""
from __future__ import annotations

import random

from reports.load import measurements
from reports.verdict import accuracy_verdict, ratio_interval, throughput_verdict
from suites.test_reports import fake_machine, throughput_row


def verdict_rows(rows):
    machine = rows[0]["machine"]["id"]
    return throughput_verdict({machine: measurements(rows)}, {machine: "box"})


def test_ratio_interval_brackets_the_ratio_and_narrows_with_rounds():
    rng = random.Random(0)
    few = ratio_interval([rng.gauss(200, 10) for _ in range(5)], [rng.gauss(100, 5) for _ in range(5)])
    many = ratio_interval([rng.gauss(200, 10) for _ in range(60)], [rng.gauss(100, 5) for _ in range(60)])
    assert few[0] < 2.0 < few[1] and many[0] < 2.0 < many[1]
    assert many[1] - many[0] < few[1] - few[0]
    assert ratio_interval([1.0], [1.0, 2.0]) is None   # one round: no noise estimate


def test_best_mode_per_framework_and_an_architecture_read_from_the_rows():
    m = fake_machine()
    rows = [throughput_row(m, [100, 101, 99], framework="tf", arch="toynet", mode="eager"),
            throughput_row(m, [150, 151, 149], framework="tf", arch="toynet", mode="xla"),
            throughput_row(m, [60, 61, 59], framework="torch", arch="toynet", mode="eager"),
            throughput_row(m, [50, 52, 48], framework="torch", arch="toynet", mode="compiled"),
            throughput_row(m, [10, 11, 9], framework="torch", arch="other", mode="eager")]
    table = verdict_rows(rows)
    by_arch = {line[2]: line for line in table.rows}
    assert by_arch["toynet"][6:] == ["150 (tf.function + XLA, n=3)", "60 (eager, n=3)",
                                     by_arch["toynet"][8], "TensorFlow"]
    assert by_arch["toynet"][8].startswith("2.50 (")
    assert by_arch["other"][8:] == ["—", "only one framework measured"]


def test_overlapping_rounds_are_called_a_tie():
    m = fake_machine()
    rows = [throughput_row(m, [90, 100, 110, 95, 105], framework="tf"),
            throughput_row(m, [92, 101, 108, 97, 104], framework="torch")]
    [line] = verdict_rows(rows).rows
    assert line[9] == "tie (interval spans 1)"


def acc_row(framework, accuracy, comparison="matrix", arch="toynet", recipe="toy_sgd"):
    return {"kind": "accuracy", "comparison": comparison, "machine": {"id": "m1"},
            "device": "cpu", "arch": arch, "recipe": recipe, "framework": framework,
            "final_accuracy": accuracy, "data": {"source": "cifar10"}}


def test_accuracy_gap_against_its_bound_never_pools_matrix_and_independent_runs():
    rows = [acc_row("tf", 0.70), acc_row("torch", 0.60), acc_row("tf", 0.66, comparison=None),
            acc_row("torch", 0.655, comparison=None), acc_row("tf", 0.5, recipe="tf_only")]
    table = accuracy_verdict(rows, {"m1": "box"})
    lines = {line[4]: line for line in table.rows}
    assert len(table.rows) == 2                      # the one-framework recipe is not a comparison
    matrix = lines["matrix (shared weights, data order)"]
    # one pair each, judged with the prior seed spread (thresholds.matrix_verdict): a 10-point
    # gap is a framework effect, a half-point gap cannot be told from reseeding
    assert matrix[5:7] == ["70.00% (1)", "60.00% (1)"]
    assert matrix[7].startswith("+10.00 (") and matrix[9] == "different"
    assert lines["independent"][7].startswith("+0.50 (")
    assert lines["independent"][9].startswith("undetermined (")


def test_machines_ratio_pairs_best_modes_whatever_their_names():
    from reports.compare import framework_ratio_table, machine_results
    m = fake_machine()
    rows = [throughput_row(m, [300, 300, 300], framework="tf", mode="graph"),   # a new mode name
            throughput_row(m, [100, 100, 100], framework="torch", mode="eager"),
            throughput_row(m, [150, 150, 150], framework="torch", mode="compiled")]
    machine = machine_results("box", rows)
    [line] = framework_ratio_table([machine, machine]).rows
    assert line[-1] == "2.00 (2.00-2.00; tf.function / torch.compile)"   # rounds do not vary


def test_a_third_architecture_flows_through_the_report(tmp_path):
    from reports.render import render
    m = fake_machine()
    rows = [throughput_row(m, [100 + i, 101 + i, 99 + i], framework=fw, arch=arch)
            for i, arch in enumerate(("keras_cnn", "lenet", "third_twin")) for fw in ("tf", "torch")]
    done = render(rows, tmp_path)
    assert sorted(p.name for p in done.plots) == ["throughput-train.png"]   # one panel each
    verdict_archs = [line.split("|")[3].strip() for line in done.answer.splitlines()
                     if line.startswith("| ") and "fp32" in line]
    assert verdict_archs == ["keras_cnn", "lenet", "third_twin"]
    assert "#### third_twin, train" in done.markdown.read_text()
