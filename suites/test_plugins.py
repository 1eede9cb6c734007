"""A new twin is one file: the throwaway architecture of suites/plugins/tiny_twin.py (its
networks, spec and recipe), registered at test time, goes through the same checks as the
published twins (shapes, bitwise weight transfer, logits parity and a parity check that can
fail), the benchmark's case list and steps, result rows and the rendered report, while no
other file of the project names it.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

import models
import test_models as model_checks
import test_parity as parity_checks
import test_shapes as shape_checks
import test_throughput as throughput_checks
import test_training as training_checks
from twinbench import bench, recipes
from twinbench.agreement import compare
from twinbench.frameworks.modes import default_mode
from twinbench.results import read_rows, write_row
from twinbench.tolerances import parity
from twinbench.train import train

PLUGIN = Path(__file__).parent / "plugins" / "tiny_twin.py"
ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("*.py", "*.ini", "*.toml", "*.cfg", "*.sh", "*.yml", "*.md", "*.txt")


def load_plugin():
    """The plugin file as a module of its own (it is in no package and on no path)."""
    spec = importlib.util.spec_from_file_location("tiny_twin_plugin", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plugin():
    module = load_plugin()
    models.register(module.SPEC)
    recipes.register(module.RECIPE)
    yield module
    del models.ARCHITECTURES[module.SPEC.name]
    del recipes.RECIPES[module.RECIPE.name]


@pytest.fixture(scope="module")
def tiny(plugin):
    return plugin.SPEC


def test_no_other_file_names_the_plugin():
    named = {p for pattern in PROJECT_FILES for p in ROOT.rglob(pattern)
             if ".git" not in p.parts and p.is_file()
             and "tiny_twin" in p.read_text(encoding="utf-8", errors="replace")}
    assert named == {PLUGIN, Path(__file__).resolve()}, sorted(map(str, named))


def test_registered_twin_has_its_shapes(framework, tiny):
    model = framework.build(tiny, seed=0)
    shape_checks.test_logits_shape(framework, model)
    shape_checks.test_feature_shapes(framework, model, tiny)


def test_registered_twin_weights_move_bitwise(framework, tiny):
    model_checks.test_parameter_count(framework, tiny)
    model_checks.test_native_parameter_count(framework, tiny)
    model_checks.test_weights_round_trip(framework, tiny)


def test_registered_twin_weights_cross_over(twins, tiny):
    model_checks.test_weights_cross_over(twins, tiny)


def test_registered_twin_logits_match_across_frameworks(twins, device, tiny):
    tf, torch = twins
    tf_model, torch_model = parity_checks.shared_twins(twins, tiny)
    images, _ = parity_checks.batch(tiny)    # prepared as the twin's own recipe prepares
    compare({"logits": torch.forward(torch_model, images)},
            {"logits": tf.forward(tf_model, images)}, parity(device).logits,
            what=f"{tiny.name} logits, torch vs tf")
    # ... and the same check fails when the flatten order is not carried over.
    parity_checks.test_parity_catches_unpermuted_flatten(twins, device, tiny)


def test_registered_twin_is_benchmarked_recorded_and_reported(framework, tiny, plugin,
                                                              results, tmp_path):
    from reports.__main__ import main as reports_main
    rows_dir, out = tmp_path / "rows", tmp_path / "report"

    def write(row):
        return write_row(rows_dir, {**results.common(), **row})

    cases = bench.cases((framework.name,), (framework.device,), (tiny.name,), quick=True,
                        batch_size_override=(8,))
    mode = default_mode(framework.name, framework.device)
    assert [(c.arch, c.mode, c.phase) for c in cases] == [(tiny.name, mode, "train"),
                                                          (tiny.name, mode, "infer")]
    for case in cases:
        row = bench.run_case(case, framework, timer=bench.BareTimer(),
                             protocol=throughput_checks.TINY, write=write)
        assert row["status"] == "ok", row["error"]
    assert row["flop_per_image"] == tiny.forward_flops    # the infer row: one forward pass
    run = train(framework, plugin.RECIPE, training_checks.tiny_split(40, 0),
                training_checks.tiny_split(24, 1), seed=0)
    write(run.row(40, SimpleNamespace(name="synthetic", digest="0" * 64)))

    rows = read_rows(rows_dir)
    assert {(r["kind"], r["arch"]) for r in rows} == {("throughput", tiny.name),
                                                      ("accuracy", tiny.name)}
    assert reports_main(["render", str(rows_dir), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    table_rows = [[cell.strip() for cell in line.split("|")] for line in report.splitlines()]
    for phase in ("train", "infer"):
        assert any(tiny.name in cells and phase in cells for cells in table_rows), (
            f"no {phase} row for {tiny.name} in the report")
    assert plugin.RECIPE.name in report
