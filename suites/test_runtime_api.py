"""reports/runtime_api.py: the TensorFlow/torch gap split into runtime and API, from rows alone.

Synthetic rows with a known split: the table recovers it, its intervals widen as seeds are
taken away, and a line without the rows a part needs says "not measured"."""
from __future__ import annotations

import math
from types import SimpleNamespace

from reports import runtime_api
from reports.load import measurements
from reports.readme import readme_block
from reports.render import render
from suites.test_reports import fake_machine, throughput_row
from twinbench.results import SCHEMA, row_problems
from twinbench.thresholds import prior_seed_std, t_quantile
from twinbench.train import Epoch, Run

MACHINE = fake_machine()
LABELS = {MACHINE["id"]: "box"}
# Per-seed accuracies with a known split: runtime (tf - keras-torch) 2 points and API
# (keras-torch - torch) 1 point on average, each difference wobbling by a fixed pattern so
# that its sample std is known: 0.3 points for the first 3 seeds and for all 5.
BASE = [0.60, 0.62, 0.61, 0.63, 0.59]
WOBBLE = [+1, -1, 0, +1, -1]


def accuracy_row(framework, seed, accuracy, *, arch="keras_cnn", recipe="keras_cnn_adam",
                 comparison="matrix"):
    run = Run(framework, "cpu", arch, recipe, seed, epochs=[Epoch(1, 1.0, accuracy, 10.0)],
              initial_weights=f"w{seed}")
    return {**run.row(50_000, SimpleNamespace(name="cifar10-jpeg", digest="d")),
            "comparison": comparison, "machine": MACHINE, "run_id": "run-1",
            "created": "2026-12-01T10:00:00+00:00", "schema": SCHEMA,
            "versions": {"python": "3.11.7"}, "determinism": False}


def split_rows(seeds: int) -> list[dict]:
    rows = []
    for s in range(seeds):
        torch = BASE[s]
        arm = torch + 0.01 + 0.003 * WOBBLE[s]
        tf = arm + 0.02 - 0.003 * WOBBLE[s]
        rows += [accuracy_row("torch", s, torch), accuracy_row("keras-torch", s, arm),
                 accuracy_row("tf", s, tf)]
    return rows


def parse(cell: str) -> tuple[float, float, float, int]:
    """'+2.00 (+1.49 to +2.51; n=3)' -> (gap, low, high, n) in points."""
    gap, rest = cell.split(" (")
    low, rest = rest.split(" to ")
    high, n = rest.rstrip(")").split("; n=")
    return float(gap), float(low), float(high), int(n)


def test_a_known_accuracy_split_is_recovered():
    [line] = runtime_api.accuracy_split(split_rows(5), LABELS).rows
    total, runtime, api = (parse(c) for c in line[5:8])
    assert runtime[0] == 2.00 and api[0] == 1.00 and total[0] == 3.00
    assert total[3] == runtime[3] == api[3] == 5
    # 5 pairs: the differences' own std (0.3 points) with Student's t, 4 degrees of freedom.
    half = t_quantile(0.95, 4) * 0.3 / math.sqrt(5)
    assert abs((runtime[2] - runtime[1]) / 2 - half) < 0.01
    assert line[8] == "pairs' own std, t"


def test_intervals_widen_with_fewer_seeds():
    widths = {}
    for seeds in (5, 3, 2, 1):
        [line] = runtime_api.accuracy_split(split_rows(seeds), LABELS).rows
        _, low, high, n = parse(line[6])
        assert n == seeds
        widths[seeds] = high - low
    assert widths[5] < widths[3] < widths[2] < widths[1]
    # Below 3 pairs the spread of a difference is the prior: sqrt(2) x the source's seed std.
    sigma = prior_seed_std("cifar10-jpeg")    # the rows' data source
    half = 1.6449 * math.sqrt(2) * 100 * sigma / math.sqrt(2)
    assert abs(widths[2] / 2 - half) < 0.01
    [line] = runtime_api.accuracy_split(split_rows(2), LABELS).rows
    assert line[8].startswith(f"prior: sqrt(2) x {100 * sigma:.1f}-point seed std")


def test_missing_accuracy_parts_are_labelled_not_dropped():
    rows = [r for r in split_rows(3) if r["framework"] != "keras-torch"]
    rows += [accuracy_row("tf", 0, 0.7, arch="lenet", recipe="lenet_sgd"),   # no partner at all
             accuracy_row("tf", 0, 0.1, comparison=None)]                  # not a matrix run
    lines = {line[2]: line for line in runtime_api.accuracy_split(rows, LABELS).rows}
    assert set(lines) == {"keras_cnn", "lenet"}
    assert parse(lines["keras_cnn"][5])[3] == 3                 # the total, over the tf/torch pairs
    assert lines["keras_cnn"][6:8] == [runtime_api.NOT_MEASURED] * 2
    assert lines["lenet"][5:9] == [runtime_api.NOT_MEASURED] * 4
    # Seeds the arm did not run leave the pairs out of every part, so the parts add up.
    partial = split_rows(3)[:-2]   # seed 2 without keras-torch and tf
    [line] = runtime_api.accuracy_split(partial, LABELS).rows
    assert [parse(c)[3] for c in line[5:8]] == [2, 2, 2]


def speed_rows(arm=True, **extra):
    rows = [throughput_row(MACHINE, [300, 303, 297, 300], framework="tf", mode="graph", **extra),
            # a faster non-default mode must not stand in for the default one
            throughput_row(MACHINE, [900, 903, 897], framework="tf", mode="xla", **extra),
            throughput_row(MACHINE, [100, 101, 99, 100], framework="torch", mode="eager", **extra)]
    if arm:
        rows += [throughput_row(MACHINE, [200, 202, 198, 200], framework="keras-torch",
                                mode="eager", **extra),
                 throughput_row(MACHINE, [600, 601, 599], framework="keras-torch",
                                mode="compiled", **extra),
                 throughput_row(MACHINE, [50, 51, 49], framework="keras-jax", mode="compiled",
                                **extra)]
    return rows


def test_a_known_throughput_split_is_recovered():
    rows = speed_rows() + speed_rows(phase="infer", batch_size=256, arm=False)
    rows += [throughput_row(MACHINE, [], framework="torch", batch_size=64, status="oom"),
             throughput_row(MACHINE, [5, 6, 7], framework="torch", batch_size=8),
             throughput_row(MACHINE, [], framework="tf", mode="graph", batch_size=8, status="oom")]
    table = runtime_api.throughput_split({MACHINE["id"]: measurements(rows)}, LABELS)
    lines = {(line[3], line[4]): line for line in table.rows}
    total, runtime, api = lines[("train", "32")][6:9]
    assert total.startswith("3.00 (") and runtime.startswith("1.50 (") and api.startswith("2.00 (")
    low, high = map(float, runtime[6:-1].split("-"))
    assert low <= 1.5 <= high
    infer = lines[("infer", "256")]
    assert infer[6].startswith("3.00 (") and infer[7:9] == [runtime_api.NOT_MEASURED] * 2
    # torch alone (batch 64) has nothing to split; tf out of memory (batch 8) is not measured
    assert ("train", "64") not in lines
    assert lines[("train", "8")][6:9] == [runtime_api.NOT_MEASURED] * 3


def test_the_report_carries_the_split_and_the_readme_only_with_arm_rows(tmp_path):
    rows = speed_rows(arm=False) + [r for r in split_rows(1) if r["framework"] != "keras-torch"]
    plain = render(rows, tmp_path / "plain").markdown.read_text()
    assert "## Runtime or API?" in plain
    assert "Runtime and API are not measured here: no keras-torch rows" in plain
    assert "Runtime or API" not in readme_block(rows, "samples")
    arm_speed = [{**r, "keras_backend": r["framework"].removeprefix("keras-")}
                 for r in speed_rows()[3:]]
    with_arm = rows + arm_speed + [r for r in split_rows(1) if r["framework"] == "keras-torch"]
    assert [row_problems(r) for r in with_arm] == [[]] * len(with_arm)   # valid rows, arms too
    block = readme_block(with_arm, "samples")
    assert "**Runtime or API? The TF/torch gap split with Keras on torch**" in block
    assert "What this supports: the split into runtime" in block
