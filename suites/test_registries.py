"""One registry per concept (architectures, recipes, frameworks, devices, modes, phases):
what reads them agrees with them, a name is registered once, and rows written under an old
mode name still load under the new one."""
from __future__ import annotations

import json

import pytest

import models
from twinbench import recipes
from twinbench.frameworks import DEVICES
from twinbench.frameworks.keras_backends import ARMS
from twinbench.frameworks.modes import MODES, PHASES, default_mode, modes_for, register_mode
from twinbench.imports import FRAMEWORKS
from twinbench.results import RENAMED_MODES, read_row, row_problems


class _OptionGroup:
    """Stands in for pytest's option group: records what conftest adds."""

    def __init__(self):
        self.options: dict[str, dict] = {}

    def addoption(self, name, **attrs):
        self.options[name] = attrs

    def getgroup(self, _name):
        return self


def test_options_offer_what_is_registered():
    """conftest's --arch, --recipe, --framework, --device and --arm choices are the registries."""
    import conftest
    group = _OptionGroup()
    conftest.pytest_addoption(group)
    choices = {name: tuple(attrs.get("choices") or ()) for name, attrs in group.options.items()}
    assert choices["--arch"] == tuple(models.ARCHITECTURES)
    assert choices["--recipe"] == tuple(recipes.RECIPES)
    assert choices["--framework"] == FRAMEWORKS
    assert choices["--device"] == DEVICES
    assert choices["--arm"] == tuple(ARMS)


def test_every_architecture_has_a_recipe_and_every_recipe_an_architecture():
    for name in models.ARCHITECTURES:
        assert recipes.for_arch(name).arch == name
    for recipe in recipes.RECIPES.values():
        assert recipe.arch in models.ARCHITECTURES, f"{recipe.name} trains an unknown twin"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered already"):
        models.register(models.get("lenet"))
    with pytest.raises(ValueError, match="registered already"):
        recipes.register(recipes.get("lenet_sgd"))
    with pytest.raises(ValueError, match="registered already"):
        register_mode("torch", "eager", ("cpu",), MODES[("torch", "eager")].factory)
    with pytest.raises(ValueError, match="no recipe trains architecture 'nothing'"):
        recipes.for_arch("nothing")


def test_each_framework_has_one_default_mode_on_each_device():
    for framework in FRAMEWORKS:
        for device in DEVICES:
            assert default_mode(framework, device) in modes_for(framework, device)
            assert modes_for(framework, device, quick=True) == (default_mode(framework, device),)


def _row(results, **fields) -> dict:
    row = {**results.common(), "kind": "throughput", "framework": "tf", "arch": "lenet",
           "device": "cpu", "mode": "graph", "phase": PHASES[0], "batch_size": 8,
           "status": "ok", "error": None, "images_per_s": [10.0], "median_images_per_s": 10.0,
           "flop_per_image": 1.0, "flops_per_s": 10.0, "ceiling_flops_per_s": None,
           "fraction_of_ceiling": None, "compile_s": 0.1, "threads": 1,
           "precision": {"tf32": False, "autocast": None}}
    return {**row, **fields}


def test_rows_are_checked_against_the_registries(results):
    assert row_problems(_row(results)) == []
    assert any("'arch'" in p and "keras_cnn | lenet" in p
               for p in row_problems(_row(results, arch="resnet50")))
    assert any("tf has no mode 'compiled'" in p
               for p in row_problems(_row(results, mode="compiled")))
    assert any("'mode'" in p for p in row_problems(_row(results, mode="warp")))


@pytest.mark.parametrize("old, new", [(k, v) for k, v in RENAMED_MODES.items()])
def test_an_old_mode_name_loads_under_its_new_name(results, tmp_path, old, new):
    framework, old_mode = old
    path = tmp_path / "old-row.json"
    path.write_text(json.dumps(_row(results, framework=framework, mode=old_mode)))
    assert read_row(path)["mode"] == new
    # the rename is per framework: torch's "eager" is still torch's "eager"
    torch_row = _row(results, framework="torch", mode="eager")
    path.write_text(json.dumps(torch_row))
    assert read_row(path)["mode"] == "eager"
