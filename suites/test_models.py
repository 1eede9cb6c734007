"""The twins exist in both frameworks: the published parameter counts, and weights that move
between the frameworks through the canonical (Keras) layout without changing a bit."""
from __future__ import annotations

import numpy as np
import pytest

from twinbench.compare import compare
from twinbench.tolerances import EXACT

# The reference programs' own counts (../shared/FACTS.md), independent of models/.
# resnet8: MLPerf Tiny's keras_model.py summary, 78,186 trainable + 480 BatchNorm moving
# statistics (torch's count adds the running mean and variance buffers to the parameters).
PUBLISHED_PARAMETERS = {"keras_cnn": 122_570, "lenet": 62_006, "resnet8": 78_666}


def random_canonical(arch, seed: int) -> dict[str, np.ndarray]:
    """Weights no initializer would produce (so a set_weights that does nothing cannot pass),
    float32, in canonical shapes."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in arch.canonical_shapes().items()}


def test_parameter_count(framework, arch):
    model = framework.build(arch, seed=0)
    weights = framework.get_weights(model)
    assert {k: v.shape for k, v in weights.items()} == arch.canonical_shapes()
    count = sum(v.size for v in weights.values())
    assert arch.parameters == PUBLISHED_PARAMETERS[arch.name]
    assert count == PUBLISHED_PARAMETERS[arch.name], (
        f"{framework.name} {arch.name}: {count:,} parameters, the reference program has "
        f"{PUBLISHED_PARAMETERS[arch.name]:,}")


def test_native_parameter_count(framework, arch):
    """The framework's own count (torch: sum of numel; Keras: count_params) agrees too."""
    if not hasattr(framework, "parameter_count"):
        pytest.skip(f"the {framework.name} adapter has no parameter_count(model) method yet")
    count = framework.parameter_count(framework.build(arch, seed=0))
    assert count == PUBLISHED_PARAMETERS[arch.name], (
        f"{framework.name} {arch.name}: the framework counts {count:,} parameters, the "
        f"reference program has {PUBLISHED_PARAMETERS[arch.name]:,}")


def test_weights_round_trip(framework, arch):
    """canonical -> framework -> canonical is bitwise exact."""
    model = framework.build(arch, seed=0)
    weights = random_canonical(arch, seed=1)
    framework.set_weights(model, weights)
    back = framework.get_weights(model)
    assert all(v.dtype == np.float32 for v in back.values())
    compare(back, weights, EXACT, what=f"canonical -> {framework.name} -> canonical")


def test_get_weights_is_a_snapshot(framework, arch):
    """Weights read out must not change when the model's weights change afterwards."""
    model = framework.build(arch, seed=0)
    before = framework.get_weights(model)
    kept = {k: v.copy() for k, v in before.items()}
    framework.set_weights(model, random_canonical(arch, seed=2))
    compare(before, kept, EXACT, what=f"{framework.name} get_weights after set_weights")


def test_weights_cross_over(twins, arch):
    """torch -> tf -> torch and tf -> torch -> tf, via the canonical layout, bitwise exact;
    each side starts from its own initializer and different seeds."""
    tf, torch = twins
    for first, second in ((torch, tf), (tf, torch)):
        origin = first.build(arch, seed=3)
        expected = {k: v.copy() for k, v in first.get_weights(origin).items()}
        other = second.build(arch, seed=4)
        second.set_weights(other, expected)
        back = first.build(arch, seed=5)
        first.set_weights(back, second.get_weights(other))
        compare(first.get_weights(back), expected, EXACT,
                what=f"{first.name} -> {second.name} -> {first.name}")
