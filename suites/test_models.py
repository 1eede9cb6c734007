"""The twins exist in both frameworks: the published parameter counts, and weights that move
between the frameworks through the canonical (Keras) layout without changing a bit."""
from __future__ import annotations

import numpy as np

from twinbench.agreement import compare
from twinbench.tolerances import EXACT


def random_canonical(arch, seed: int) -> dict[str, np.ndarray]:
    """Weights no initializer would produce (so a set_weights that does nothing cannot pass),
    float32, in canonical shapes."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in arch.canonical_shapes().items()}


def test_parameter_count(framework, arch):
    """The built twin has the canonical weights of its spec, and as many parameters as the
    spec declares (`Architecture.parameters`: the reference program's own count, stated in
    each models/ module's docstring, independent of the layer shapes it is checked against)."""
    model = framework.build(arch, seed=0)
    weights = framework.get_weights(model)
    assert {k: v.shape for k, v in weights.items()} == arch.canonical_shapes()
    count = sum(v.size for v in weights.values())
    assert count == arch.parameters, (
        f"{framework.name} {arch.name}: {count:,} parameters, the reference program has "
        f"{arch.parameters:,}")


def test_native_parameter_count(framework, arch):
    """The framework's own count (torch: sum of numel; Keras: count_params) agrees too."""
    count = framework.parameter_count(framework.build(arch, seed=0))
    assert count == arch.parameters, (
        f"{framework.name} {arch.name}: the framework counts {count:,} parameters, the "
        f"reference program has {arch.parameters:,}")


def test_build_is_seeded_and_leaves_global_rngs_alone(framework, arch):
    """The same seed builds the same weights, another seed others; and building draws
    nothing from (nor reseeds) Python's or NumPy's global RNGs (Framework.build)."""
    import random
    python_state, numpy_state = random.getstate(), np.random.get_state()
    first = framework.get_weights(framework.build(arch, seed=11))
    again = framework.get_weights(framework.build(arch, seed=11))
    other = framework.get_weights(framework.build(arch, seed=12))
    assert random.getstate() == python_state, "build changed Python's global RNG"
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) \
        and after[2:] == numpy_state[2:], "build changed NumPy's global RNG"
    compare(again, first, EXACT, what=f"{framework.name} build(seed=11) twice")
    assert any(not np.array_equal(first[k], other[k]) for k in first), "seed 12 built seed 11"


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
