"""Throughput: `pytest -m benchmark` measures training-step and inference images/s for each
arch x framework x device x mode x phase x batch size (twinbench/bench.py says what a step
and the timing protocol are, twinbench/frameworks/modes.py what each mode runs) and writes one row per configuration.

The benchmark tests are marked `benchmark`; the unit tests below them (fast, default tier)
prove what the measurements rest on: an OOM becomes a row and the run goes on, the device
synchronization lies inside every timed round, the captured step equals the eager one.

Why an OOM passes its test: running out of memory at batch 8192 is a property of the device
(a 40 GB card cannot hold what an 80 GB one can), not a defect of the code, so failing the
test would turn every CI job on a smaller card red. It is never silent: the row says "oom"
(the reports print OOM in the img/s column), a line is printed as it happens, a
BenchmarkOOMWarning lands in pytest's warnings summary, and `reports gate` counts a
configuration that ran in the baseline and runs out of memory now as a regression.
(An xfail would claim a known bug; a skip would claim it never ran.)
"""
from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import pytest

import models
from fixtures.frameworks import adapter
from fixtures.session import settings
from reports import stats
from twinbench import bench, recipes
from twinbench.frameworks.keras_backends import ARMS
from twinbench.frameworks.modes import modes_for
from twinbench.results import read_rows, write_row

# The harness (pytest-benchmark pedantic + the per-round synchronization) may cost at most
# this much against a bare perf_counter loop of the same synchronized steps: pedantic adds
# one Python call per step (about a microsecond) to steps of milliseconds, so anything near
# 3% would mean the harness, not the framework, is being measured.
MAX_HARNESS_OVERHEAD = 0.03
# Alternating rounds, harness then bare: many short rounds, so that each median is known to
# about 1% on a quiet machine, in about 6 s per framework (it runs in the quick tier too).
OVERHEAD_PROTOCOL = bench.Protocol(rounds=25, warmup_rounds=2, round_s=0.1)
# A 3% limit can only be judged when the two medians are known to better than this (combined
# relative standard error). On a loaded 2-core machine single rounds of a 2-thread torch step
# can vary tenfold (OpenMP threads waiting on a descheduled sibling); a difference then says
# nothing about the harness, and the test reports "inconclusive" instead of a verdict.
MAX_OVERHEAD_NOISE = 0.01


class BenchmarkOOMWarning(UserWarning):
    """A configuration ran out of memory: recorded as an "oom" row, the run went on."""


def pytest_generate_tests(metafunc):
    """One `case` per configuration, ids like torch-cpu-keras_cnn-eager-train-b32. Modes and
    batch sizes depend on framework and device, so the whole configuration is one parameter."""
    if "case" not in metafunc.fixturenames:
        return
    s = settings(metafunc.config)
    cases = bench.cases(s.frameworks, s.devices, s.arches, quick=s.quick,
                        batch_size_override=s.batch_sizes, arms=s.arms)
    metafunc.parametrize("case", [
        pytest.param(c, id=c.id, marks=[pytest.mark.gpu] if c.device == "gpu" else [])
        for c in cases])


# --------------------------------------------------------------------------------------
# The benchmark tier
# --------------------------------------------------------------------------------------
@pytest.mark.benchmark
def test_throughput(case, request, results, ceilings, protocol, progress, record_property):
    if case.framework in ARMS:
        return _arm_throughput(case, request, results, ceilings, protocol, progress,
                               record_property)
    # Requested here, not for an arm: pytest-benchmark warns about a fixture it did not time.
    benchmark = request.getfixturevalue("benchmark")
    framework = adapter(case.framework, case.device)   # a skip, with the reason, if impossible
    if benchmark.disabled:
        # --benchmark-disable (or xdist, under which pytest-benchmark disables itself): run
        # the step once as a smoke test, measure nothing, and say so.
        step = bench.make_step(framework, models.get(case.arch), case.mode, case.phase,
                               case.batch_size)
        bench.first_call_s(step)
        step.close()
        pytest.skip("pytest-benchmark is disabled (--benchmark-disable, or pytest-xdist -n): "
                    "ran the step once, measured nothing, wrote no row")
    benchmark.group = f"{case.arch} {case.device} {case.phase} batch {case.batch_size}"
    row = bench.run_case(case, framework, timer=bench.PedanticTimer(benchmark),
                         protocol=protocol, ceiling=ceilings.get(case.device),
                         write=results.write)
    progress(bench.describe(row))
    for key in ("median_images_per_s", "compile_s", "fraction_of_ceiling", "status"):
        record_property(key, row[key])
    benchmark.extra_info.update(images_per_s=row["median_images_per_s"], status=row["status"],
                                compile_s=row["compile_s"])
    if row["status"] == "oom":
        benchmark.skipped = True   # no stats to show; keeps pytest-benchmark from warning "unused"
        warnings.warn(BenchmarkOOMWarning(
            f"{case.id}: out of memory, recorded as an 'oom' row ({row['error']})"))
    else:
        assert row["status"] == "ok" and len(row["images_per_s"]) == protocol.rounds


def _arm_throughput(case, request, results, ceilings, protocol, progress, record_property):
    """A Keras-backend arm's configuration (--arm): the same protocol and row schema, timed
    inside the arm's worker (bench.run_arm_case), so pytest-benchmark records nothing."""
    arm = adapter(case.framework, case.device)   # a skip, with the reason
    config = request.config
    if hasattr(config, "workerinput") or config.getoption("benchmark_disable", False):
        # As the frameworks' cases under --benchmark-disable or pytest-xdist: parallel workers
        # would share the cores the arm is timed on.
        pytest.skip("benchmarks are disabled (--benchmark-disable, or pytest-xdist -n): "
                    "measured nothing, wrote no row")
    row = bench.run_arm_case(case, arm, protocol=protocol, ceiling=ceilings.get(case.device),
                             write=results.write)
    progress(bench.describe(row))
    for key in ("median_images_per_s", "compile_s", "fraction_of_ceiling", "status"):
        record_property(key, row[key])
    if row["status"] == "oom":
        warnings.warn(BenchmarkOOMWarning(
            f"{case.id}: out of memory, recorded as an 'oom' row ({row['error']})"))
    else:
        assert row["status"] == "ok" and len(row["images_per_s"]) == protocol.rounds


@pytest.mark.benchmark
def test_harness_overhead(framework, benchmark, progress, record_property):
    """The suite's figure (pytest-benchmark pedantic) against a bare perf_counter loop of the
    same synchronized step, rounds alternating (harness, bare, harness, ...) so that drifting
    load on a shared machine touches both alike; the medians must agree within 3%."""
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (--benchmark-disable, or pytest-xdist -n)")
    # LeNet is the cheapest step, so the harness's fixed cost per step weighs most there.
    batch = bench.QUICK_BATCH_SIZES[framework.device][0]
    mode = _default_mode(framework)
    step = bench.make_step(framework, models.get("lenet"), mode, "train", batch)
    try:
        bench.first_call_s(step)
        p = OVERHEAD_PROTOCOL
        iterations = p.iterations(bench.estimate_step_s(step))
        bare_timer = bench.BareTimer()
        bare: list[float] = []

        def bare_round():
            bare.extend(bare_timer.seconds_per_step(step, rounds=1, iterations=iterations,
                                                    warmup_rounds=0))
        benchmark.group = "harness overhead"
        harness = bench.PedanticTimer(benchmark, between_rounds=bare_round).seconds_per_step(
            step, rounds=p.rounds, iterations=iterations, warmup_rounds=p.warmup_rounds)
    finally:
        step.close()
    bare = bare[p.warmup_rounds:]   # the rounds that followed the harness's timed rounds
    overhead = statistics.median(harness) / statistics.median(bare) - 1
    noise = math.hypot(stats.relative_median_se(harness), stats.relative_median_se(bare))
    record_property("harness_overhead", overhead)
    record_property("harness_overhead_se", noise)
    benchmark.extra_info.update(harness_overhead=overhead, harness_overhead_se=noise)
    summary = (f"harness overhead, {framework.name}/lenet {framework.device} {mode} train "
               f"b{batch}: pytest-benchmark {batch / statistics.median(harness):,.0f} img/s vs "
               f"bare loop {batch / statistics.median(bare):,.0f} img/s ({len(harness)} vs "
               f"{len(bare)} alternating rounds of {iterations} steps): {100 * overhead:+.2f}% "
               f"(standard error {100 * noise:.2f}%)")
    progress(summary)
    if abs(overhead) > MAX_HARNESS_OVERHEAD and noise > MAX_OVERHEAD_NOISE:
        pytest.skip(f"inconclusive, the machine is too noisy to judge a "
                    f"{100 * MAX_HARNESS_OVERHEAD:.0f}% limit: {summary}")
    assert abs(overhead) <= MAX_HARNESS_OVERHEAD, (
        f"harness figure differs from the bare loop by {100 * overhead:+.2f}% "
        f"(limit {100 * MAX_HARNESS_OVERHEAD:.0f}%): {summary}")


# --------------------------------------------------------------------------------------
# Unit tests (default tier): what the measurements rest on
# --------------------------------------------------------------------------------------
TINY = bench.Protocol(rounds=3, warmup_rounds=1, round_s=0.005)


def _default_mode(framework) -> str:
    """The framework's default way to run a step (its mode measured under --quick)."""
    return modes_for(framework.name, framework.device, quick=True)[0]


def _oom(framework) -> Exception:
    """An instance of the adapter's own OOM class, as the allocator raises it."""
    cls = framework.oom_errors()[0]
    if framework.name == "torch":
        return cls("CUDA out of memory. Tried to allocate 2.00 GiB (fault injected)")
    return cls(None, None, "OOM when allocating tensor with shape[8192,64,30,30] (fault injected)")


def _faulty_factory(fault: Exception, where: str):
    """make_step, with `fault` raised while building, at the first call, or inside a timed
    round; returns (factory, arm): calling arm() makes every later step raise."""
    armed = {"on": where == "first_call"}

    def factory(adapter_, arch, mode, phase, batch_size, seed=0):
        if where == "build":
            raise fault
        step = bench.make_step(adapter_, arch, mode, phase, batch_size, seed)
        run = step.run

        def faulty_run():
            if armed["on"]:
                raise fault
            return run()
        step.run = faulty_run
        return step
    return factory, lambda: armed.update(on=True)


@pytest.mark.parametrize("where", ["build", "first_call", "timed"])
def test_oom_becomes_a_row_and_the_next_configuration_runs(framework, where, results, tmp_path):
    def write(row):
        return write_row(tmp_path, {**results.common(), **row})

    mode = _default_mode(framework)
    oom_case = bench.Case(framework.name, framework.device, "lenet", mode, "train", 8)
    next_case = bench.Case(framework.name, framework.device, "lenet", mode, "infer", 4)
    factory, arm = _faulty_factory(_oom(framework), where)
    # "timed": the first round completes, then the fault strikes inside the second round.
    timer = bench.BareTimer(between_rounds=arm if where == "timed" else None)
    oom_row = bench.run_case(oom_case, framework, timer=timer, protocol=TINY, write=write,
                             step_factory=factory)
    next_row = bench.run_case(next_case, framework, timer=bench.BareTimer(), protocol=TINY,
                              write=write)

    rows = {r["phase"]: r for r in read_rows(tmp_path)}   # validated against the schema
    assert set(rows) == {"train", "infer"}, "one row per configuration, the OOM one included"
    oom = rows["train"]
    assert oom == {**oom_row, **{k: oom[k] for k in oom.keys() - oom_row.keys()}}
    assert oom["status"] == "oom"
    assert oom["images_per_s"] == [] and oom["median_images_per_s"] is None
    assert oom["flops_per_s"] is None and oom["fraction_of_ceiling"] is None
    assert "fault injected" in oom["error"]
    assert type(_oom(framework)).__name__ in oom["error"]
    assert rows["infer"]["status"] == next_row["status"] == "ok"
    assert len(rows["infer"]["images_per_s"]) == TINY.rounds


def test_a_wrapped_oom_is_still_an_oom(framework):
    """A compiler may wrap the allocator's error (raise ... from oom): still an OOM."""
    try:
        try:
            raise _oom(framework)
        except Exception as inner:
            raise RuntimeError("backend compiler failed") from inner
    except RuntimeError as wrapped:
        assert framework.is_oom(wrapped)
    assert not framework.is_oom(ValueError("shapes do not match"))


def test_other_errors_are_recorded_and_fail_the_test(framework, results, tmp_path):
    def write(row):
        return write_row(tmp_path, {**results.common(), **row})

    case = bench.Case(framework.name, framework.device, "lenet", _default_mode(framework),
                      "train", 8)
    factory, _ = _faulty_factory(ValueError("not an OOM"), "first_call")
    with pytest.raises(ValueError, match="not an OOM"):
        bench.run_case(case, framework, timer=bench.BareTimer(), protocol=TINY, write=write,
                       step_factory=factory)
    (row,) = read_rows(tmp_path)
    assert row["status"] == "error" and "not an OOM" in row["error"]


class _FakeDevice:
    """A step that only enqueues work: its cost is paid in sync(), as on a GPU. A timer whose
    rounds end before the device finished would report impossibly short steps."""
    STEP_S = 0.002

    def __init__(self):
        self.pending = 0

    def step(self) -> bench.Step:
        def run():
            self.pending += 1

        def sync():
            time.sleep(self.pending * self.STEP_S)
            self.pending = 0
        return bench.Step(run=run, sync=sync)


def test_bare_timer_rounds_include_the_device_work():
    step = _FakeDevice().step()
    seconds = bench.BareTimer().seconds_per_step(step, rounds=3, iterations=10, warmup_rounds=1)
    assert len(seconds) == 3
    assert min(seconds) >= _FakeDevice.STEP_S * 0.95


def test_pedantic_rounds_include_the_device_work(benchmark):
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (--benchmark-disable, or pytest-xdist -n)")
    device = _FakeDevice()
    seconds = bench.PedanticTimer(benchmark).seconds_per_step(device.step(), rounds=3,
                                                              iterations=10, warmup_rounds=1)
    assert len(seconds) == 3
    assert min(seconds) >= _FakeDevice.STEP_S * 0.95
    assert device.pending == 0, "the device was left with unsynchronized work"


def test_calibration_sizes_rounds_to_the_step():
    assert bench.Protocol(rounds=3, warmup_rounds=0, round_s=0.5).iterations(0.01) == 50
    assert bench.Protocol(rounds=3, warmup_rounds=0, round_s=0.5).iterations(2.0) == 1
    device = _FakeDevice()
    estimate = bench.estimate_step_s(device.step(), min_s=0.02)
    assert estimate == pytest.approx(_FakeDevice.STEP_S, rel=0.5)


def test_rows_carry_flops_and_the_fraction_of_the_ceiling():
    arch = models.get("keras_cnn")
    train = bench.Case("torch", "cpu", "keras_cnn", "eager", "train", 32)
    fields = bench.throughput_fields(train, arch, [900.0, 1100.0, 1000.0], 30e9)
    assert fields["median_images_per_s"] == 1000.0
    assert fields["flop_per_image"] == pytest.approx(3 * arch.forward_flops)
    assert fields["flops_per_s"] == pytest.approx(1000.0 * 3 * arch.forward_flops)
    assert fields["fraction_of_ceiling"] == pytest.approx(fields["flops_per_s"] / 30e9)
    infer = bench.Case("torch", "cpu", "keras_cnn", "eager", "infer", 32)
    assert bench.throughput_fields(infer, arch, [1.0], None)["flop_per_image"] == arch.forward_flops
    assert bench.throughput_fields(infer, arch, [1.0], None)["fraction_of_ceiling"] is None


def test_configurations_follow_device_and_quick():
    """The case list is the product of the registries: every registered mode where it exists
    (cuda_graph has no CPU case), each framework's quick mode alone under quick, and the
    frameworks interleaved so that drifting load touches both alike."""
    full = bench.cases(("tf", "torch"), ("cpu", "gpu"), ("keras_cnn",), quick=False)
    cpu = {(c.framework, c.mode) for c in full if c.device == "cpu"}
    assert cpu == {("tf", "graph"), ("tf", "xla"), ("torch", "eager"), ("torch", "compiled")}
    assert ("torch", "cuda_graph") in {(c.framework, c.mode) for c in full if c.device == "gpu"}
    assert not any(c.mode == "cuda_graph" for c in full if c.device == "cpu")
    quick = bench.cases(("tf", "torch"), ("cpu", "gpu"), ("keras_cnn",), quick=True)
    assert {(c.framework, c.mode) for c in quick} == {("tf", "graph"), ("torch", "eager")}
    assert len(quick) == 2 * 2 * 2   # devices x frameworks x phases, one batch size each
    # Within one (device, arch, phase, batch) the two frameworks follow each other.
    firsts = [c.framework for c in full if c.device == "cpu" and c.phase == "train"][:4]
    assert firsts == ["tf", "tf", "torch", "torch"]
    override = bench.cases(("torch",), ("cpu",), ("lenet",), quick=True,
                           batch_size_override=(4, 4, 64))
    assert [c.batch_size for c in override if c.phase == "train"] == [4, 64]


def test_arm_configurations_follow_the_frameworks():
    """--arm adds each arm's modes right after the frameworks' in every (device, arch, phase,
    batch): both modes in full, the backend's default (Keras's own choice) under quick."""
    quick = bench.cases(("tf", "torch"), ("cpu",), ("keras_cnn",), quick=True,
                        arms=("keras-torch", "keras-jax"))
    assert [(c.framework, c.mode) for c in quick if c.phase == "train"] == [
        ("tf", "graph"), ("torch", "eager"), ("keras-torch", "eager"), ("keras-jax", "compiled")]
    full = bench.cases(("torch",), ("cpu",), ("lenet",), quick=False, arms=("keras-torch",))
    assert [c.mode for c in full if c.framework == "keras-torch" and c.phase == "infer"
            and c.batch_size == 32] == ["eager", "compiled"]
    assert bench.cases(("tf",), ("cpu",), ("lenet",), quick=True, arms=()) == bench.cases(
        ("tf",), ("cpu",), ("lenet",), quick=True)


def test_a_mode_that_does_not_exist_here_is_refused_by_name(framework):
    with pytest.raises(ValueError, match="has no mode 'warp'.*expected one of"):
        bench.make_step(framework, models.get("lenet"), "warp", "train", 4)
    with pytest.raises(ValueError, match="unknown phase"):
        bench.make_step(framework, models.get("lenet"), _default_mode(framework), "fly", 4)


def test_default_training_step_learns_the_resident_batch(framework, arch):
    """The timed step is a real training step: repeated on one batch, its loss falls."""
    step = bench.make_step(framework, arch, _default_mode(framework), "train", 16)
    try:
        losses = [float(step.run()) for _ in range(15)]
    finally:
        step.close()
    assert np.isfinite(losses).all()
    # LeNet's SGD (lr 1e-3) moves slowly: 15 steps take its loss down by about 0.02.
    assert losses[-1] < losses[0] - 0.005, f"loss did not fall: {losses}"
    assert all(b < a for a, b in zip(losses, losses[1:])), f"loss did not fall steadily: {losses}"


def test_keras_adam_keeps_its_step_count_on_the_device():
    """A CUDA graph replays device work only: Adam's step count and bias-corrected step size
    must live in a tensor updated inside step(), or every replay would reuse the step size of
    the capture. Checked here on the CPU: the count is a tensor beside the parameters (not a
    Python number) and advances once per training step."""
    torch_cpu = adapter("torch", "cpu")   # a skip with the reason where torch cannot be loaded
    arch = models.get("keras_cnn")
    recipe = recipes.for_arch(arch.name)
    assert recipe.optimizer == "adam", "keras_cnn's recipe no longer trains with Adam"
    model = torch_cpu.build(arch)
    optimizer = torch_cpu.make_optimizer(model, recipe)
    images, labels = bench.synthetic_batch(4, recipe)
    parameter = next(model.net.parameters())
    for n in (1, 2, 3):
        torch_cpu.train_step(model, optimizer, images, labels)
        count = optimizer.param_groups[0]["step"]
        assert not isinstance(count, (int, float)), f"the step count is a Python {type(count)}"
        assert count.device == parameter.device and float(count) == n


@pytest.mark.gpu
def test_cuda_graph_step_equals_eager_steps(arch, torch_gpu):
    """Replaying the captured training step trains exactly as eager steps do (GPU only)."""
    graph = bench.make_step(torch_gpu, arch, "cuda_graph", "train", 64)
    eager = bench.make_step(torch_gpu, arch, "eager", "train", 64)
    try:
        graph.prepare()            # warm-up steps (undone), then the capture (which runs nothing)
        for _ in range(3):
            graph.run()
        for _ in range(3):
            eager.run()
        torch_gpu.synchronize()
        got, want = torch_gpu.get_weights(graph.model), torch_gpu.get_weights(eager.model)
    finally:
        graph.close()
        eager.close()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5,
                                   err_msg=f"cuda_graph training departs from eager: {name}")


def test_cpu_ceiling_is_the_fastest_sgemm_at_hand(monkeypatch):
    from twinbench.frameworks import ceilings
    monkeypatch.setattr(ceilings, "CPU_MATMUL_N", 256)
    monkeypatch.setattr(ceilings, "CPU_COPY_BYTES", 4 * 2**20)
    measured = ceilings.measure("cpu")
    assert measured.matmul_flops_per_s > 0 and measured.copy_bytes_per_s > 0
    assert "numpy" in measured.method
    flop = 2 * 256 ** 3
    monkeypatch.setattr(ceilings, "_cpu_matmuls", lambda: {"slow sgemm": 2.0, "fast sgemm": 0.5})
    chosen = ceilings.measure("cpu")
    assert chosen.matmul_flops_per_s == pytest.approx(flop / 0.5)
    assert "slow sgemm" in chosen.method and "fast sgemm" in chosen.method
