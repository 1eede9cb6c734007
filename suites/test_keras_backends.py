"""The Keras twins on Keras 3's torch and JAX backends compute what they compute on TensorFlow.

Each arm runs the architecture's unchanged `keras_model()` in a worker process of its own
(twinbench/frameworks/keras_backends.py). The TensorFlow twin is built here, its initial
weights go to the arm through the canonical layout, and both see the same batches: logits,
loss, gradients, and the recipes' Adam and SGD after 1 and 10 steps must agree within the
same bounds as the TensorFlow/torch parity (twinbench/tolerances.py; the measured errors per
arm in docs/methodology.md#parity). With BatchNorm (resnet8) that includes its policy, as in
suites/test_parity.py and suites/test_optimizer_steps.py: both BatchNorm modes, and in
training mode float64 runs of both sides, which must agree, and against which each side's
float32 error is measured. The comparisons reuse the TensorFlow/torch suites' helpers, so
that one bound means one thing. The last tests check the worker's guard rails.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from test_optimizer_steps import (CHECKPOINTS, OPTIMIZERS, STEPS, batches,
                                  check_batchnorm_weights, check_float64_weights,
                                  check_loss_trajectory, check_weights, recipe_for, run)
from test_parity import BATCH, batch, bn_training, check_float64_outputs, check_gradients

import models
from fixtures.frameworks import adapter
from twinbench import bench, tolerances
from twinbench.agreement import compare, report
from twinbench.frameworks import keras_backends
from twinbench.frameworks.keras_backends import ARMS, KerasBackendFramework
from twinbench.recipes import RECIPES
from twinbench.tolerances import parity

# resnet8's items on the arms (float64 BatchNorm twins, a compile per new shape on JAX) took
# 5.9 more minutes of this module on the 2-core CPU box than lenet and keras_cnn alone, more
# than the CI fast tier can take on the slowest host class: they run with `-m slow`
# (docs/methodology.md#parity); the TensorFlow/torch resnet8 parity stays in the fast tier.
SLOW_ARCHS = ("resnet8",)


@pytest.fixture(scope="session")
def tensorflow(request, device):
    """The TensorFlow adapter, the reference every arm is compared with."""
    from fixtures.session import settings
    if "tf" not in settings(request.config).frameworks:
        pytest.skip("the Keras backends are compared with TensorFlow, which --framework excluded")
    return adapter("tf", device)


@pytest.fixture(scope="session", params=list(ARMS))
def arm(request, tensorflow, device):
    """One Keras-backend arm on one device (ids keras-torch, keras-jax); skips with the reason
    when its backend is not installed or cannot see the device."""
    reason = keras_backends.unavailable_reason(request.param, device)
    if reason:
        pytest.skip(reason)
    return KerasBackendFramework(request.param, device)


def initial_weights(tensorflow, arch, seed: int = 0) -> dict:
    """The TensorFlow twin's initial float32 weights: every comparison here starts from them."""
    return tensorflow.get_weights(tensorflow.build(arch, seed=seed))


def shared_weights(tensorflow, arm, arch, seed: int = 0, dtype: str = "float32"):
    """(tf model, arm model) in `dtype`, with the tf twin's initial float32 weights in both,
    as test_parity.shared_twins (the arm is built from another seed, so a set_weights that did
    nothing could not pass)."""
    weights = initial_weights(tensorflow, arch, seed)
    models_ = tensorflow.build(arch, seed=seed, dtype=dtype), arm.build(arch, seed=seed + 1,
                                                                        dtype=dtype)
    for fw, model in zip((tensorflow, arm), models_):
        fw.set_weights(model, {k: v.astype(dtype) for k, v in weights.items()})
    return models_


def precisions(arch) -> tuple[str, ...]:
    """The dtypes a training comparison runs in: float64 too where BatchNorm trains on batch
    statistics (the policy of twinbench/tolerances.py), as suites/test_optimizer_steps.py."""
    return ("float32", "float64") if arch.batchnorm else ("float32",)


def suffix(dtype: str) -> str:
    """A run's key: "tf" / "arm" in float32, "tf64" / "arm64" in float64 (the helpers' names)."""
    return "" if dtype == "float32" else "64"


@pytest.fixture(scope="module", params=["training", "inference"])
def bn_mode(request):
    """BatchNorm on the batch's statistics (training) or on its moving ones (inference), as in
    suites/test_parity.py."""
    return request.param


_OUTPUTS: dict = {}


@pytest.fixture
def outputs(tensorflow, arm, arch, bn_mode):
    """Logits, loss and gradients of the TensorFlow twin ("tf") and of the arm ("arm") on one
    batch; where BatchNorm trains on batch statistics, of their float64 runs too ("tf64",
    "arm64")."""
    if bn_mode == "inference" and not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: inference mode is the training-mode function")
    key = (arm.name, tensorflow.device, arch.name, bn_mode)
    if key not in _OUTPUTS:
        images, labels = batch(arch)
        training = bn_mode == "training"
        out = {}
        for dtype in (("float32", "float64") if bn_training(arch, bn_mode) else ("float32",)):
            x = images.astype(dtype)
            for side, fw, model in zip(("tf", "arm"), (tensorflow, arm),
                                       shared_weights(tensorflow, arm, arch, dtype=dtype)):
                out[side + suffix(dtype)] = (
                    fw.forward(model, x), *fw.loss_and_gradients(model, x, labels,
                                                                 training=training))
        _OUTPUTS[key] = out
    return _OUTPUTS[key]


def where(arm, device, arch, bn_mode) -> str:
    """A report's label; the BatchNorm mode where there is one."""
    return f"{arm.name} {device}-{arch.name}" + (f" {bn_mode}" if arch.batchnorm else "")


def test_logits_match_tensorflow(outputs, arm, device, arch, bn_mode, record_property):
    errors = compare({"logits": outputs["arm"][0]}, {"logits": outputs["tf"][0]},
                     parity(device).logits, what=f"{arch.name} logits, {arm.name} vs tf")
    report(errors, f"{where(arm, device, arch, bn_mode)} logits", record_property)


def test_loss_matches_tensorflow(outputs, arm, device, arch, bn_mode, record_property):
    errors = compare({"loss": outputs["arm"][1]}, {"loss": outputs["tf"][1]},
                     parity(device).loss, what=f"{arch.name} loss, {arm.name} vs tf")
    report(errors, f"{where(arm, device, arch, bn_mode)} loss", record_property)


def test_gradients_match_tensorflow(outputs, arm, device, arch, bn_mode, record_property):
    """Every canonical variable's gradient, BatchNorm's moving statistics included (zero in
    training mode, real in inference mode, on both sides)."""
    errors = check_gradients(outputs, "arm", arm.name, device, arch, bn_mode)
    report(errors, f"{where(arm, device, arch, bn_mode)} gradients", record_property)


def test_float64_runs_agree_with_tensorflow(outputs, arm, device, arch, bn_mode,
                                            record_property):
    """With BatchNorm on batch statistics: the arm's float64 run computes TensorFlow's float64
    logits, loss and gradients to far below float32 rounding, so the float32 differences are
    rounding (twinbench/tolerances.py, FLOAT64_TWINS), as test_parity.test_float64_twins_agree."""
    if not bn_training(arch, bn_mode):
        pytest.skip("float32 has its derived bounds here; float64 is needed for BatchNorm "
                    "in training mode only")
    errors = check_float64_outputs(outputs, "arm", arm.name, arch)
    report(errors, f"{arm.name} {device}-{arch.name} float64", record_property)


def test_training_mode_updates_the_moving_statistics_as_tensorflow(tensorflow, arm, device,
                                                                    arch, record_property):
    """A training-mode loss or loss_and_gradients moves BatchNorm's moving statistics once, in
    TensorFlow (Keras assigns them inside the call) and on the arm; an inference-mode one
    leaves them. Compared in float64, where the two agree (the float32 statistics inherit the
    batch variance's rounding, tolerances.py)."""
    if not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: no moving statistics")
    images, labels = batch(arch)
    x = images.astype("float64")
    models_ = shared_weights(tensorflow, arm, arch, dtype="float64")
    initial = {k: v.astype("float64") for k, v in initial_weights(tensorflow, arch).items()}
    moved = {}
    for fw, model in zip((tensorflow, arm), models_):
        fw.loss_and_gradients(model, x, labels, training=False)
        fw.loss(model, x, labels, training=False)
        unmoved = fw.get_weights(model)
        assert all(np.array_equal(unmoved[k], initial[k]) for k in initial), \
            f"{fw.name}: an inference-mode call changed the weights"
        fw.loss_and_gradients(model, x, labels)
        fw.loss(model, x, labels)
        moved[fw.name] = fw.get_weights(model)
    statistics = [k for k in initial if k.rsplit("/", 1)[1] in ("moving_mean", "moving_variance")]
    changes = {side: {k: w[k] - initial[k] for k in statistics} for side, w in moved.items()}
    assert all(np.abs(d).max() > 0 for d in changes["tf"].values()), "TensorFlow's did not move"
    errors = compare(changes[arm.name], changes["tf"], tolerances.FLOAT64_TWINS,
                     what=f"{arch.name} moving statistics moved by two training-mode calls, "
                          f"{arm.name} vs tf",
                     floor={k: tolerances.zero_gradient_floor(tolerances.U64, np.abs(c).max())
                            for k, c in changes["tf"].items()})
    report(errors, f"{arm.name} {device}-{arch.name} float64 moving statistics", record_property)
    others = [k for k in initial if k not in statistics]
    compare({k: moved[arm.name][k] for k in others}, {k: initial[k] for k in others},
            tolerances.EXACT, what=f"{arm.name}: the other weights after loss calls")


# -- optimizer steps ------------------------------------------------------------------------------
_TRAJECTORIES: dict = {}


def trajectories(tensorflow, arm, arch, optimizer: str, recipe=None):
    """Both sides' runs of STEPS steps from the tf twin's initial weights on the same batches,
    in each of precisions(arch); computed once per (arm, device, arch, optimizer) unless a
    recipe (the arm's, e.g. a mutant) is given. Keyed as suites/test_optimizer_steps.py's
    runs, with "arm" for "torch"."""
    key = (arm.name, tensorflow.device, arch.name, optimizer)
    cached = recipe is None
    if cached and key in _TRAJECTORIES:
        return _TRAJECTORIES[key]
    reference = recipe_for(arch, optimizer)
    data = batches(reference)
    out = dict(recipe=reference, initial=initial_weights(tensorflow, arch))
    for dtype in precisions(arch):
        typed = [(images.astype(dtype), labels) for images, labels in data]
        tf_model, arm_model = shared_weights(tensorflow, arm, arch, dtype=dtype)
        out["tf" + suffix(dtype)] = run(tensorflow, tf_model,
                                        tensorflow.make_optimizer(tf_model, reference), typed)
        out["arm" + suffix(dtype)] = run(arm, arm_model,
                                         arm.make_optimizer(arm_model, recipe or reference), typed)
    if cached:
        _TRAJECTORIES[key] = out
    return out


def check_arm_weights(device, arch, run_, steps, what):
    """The arm's weights after `steps` steps against TensorFlow's, with the bound
    suites/test_optimizer_steps.py uses for the architecture: with BatchNorm, each side's
    float32 error against its own float64 run (check_batchnorm_weights)."""
    if arch.batchnorm:
        return check_batchnorm_weights(run_, steps, what, other="arm")
    return check_weights(device, run_["recipe"], run_["initial"], steps, run_["arm"][1][steps],
                         run_["tf"][1][steps], what=what)


@pytest.mark.parametrize("steps", CHECKPOINTS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_weights_after_steps_match_tensorflow(tensorflow, arm, device, arch, optimizer, steps,
                                              record_property):
    run_ = trajectories(tensorflow, arm, arch, optimizer)
    errors = check_arm_weights(device, arch, run_, steps,
                               what=f"{arch.name} {optimizer}: weights after {steps} step(s), "
                                    f"{arm.name} vs tf")
    report(errors, f"{arm.name} {optimizer} {device}-{arch.name} weights after {steps} step(s)",
           record_property)


@pytest.mark.parametrize("steps", CHECKPOINTS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_float64_weights_after_steps_match_tensorflow(tensorflow, arm, device, arch, optimizer,
                                                      steps, record_property):
    """With BatchNorm the float32 bound rests on the float64 runs agreeing, as in
    test_optimizer_steps.test_float64_weights_after_steps (check_float64_weights)."""
    if not arch.batchnorm:
        pytest.skip(f"{arch.name} has no BatchNorm: float32 has its derived bounds")
    run_ = trajectories(tensorflow, arm, arch, optimizer)
    errors = check_float64_weights(run_, steps, run_["arm64"][1][steps],
                                   what=f"{arch.name} {optimizer}: float64 weights after "
                                        f"{steps} step(s), {arm.name} vs tf")
    report(errors, f"{arm.name} {optimizer} {device}-{arch.name} float64 weights after "
                   f"{steps} step(s)", record_property)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_loss_trajectory_matches_tensorflow(tensorflow, arm, device, arch, optimizer,
                                            record_property):
    """Step k's loss is computed on weights that k-1 steps rounded apart: the forward bound
    plus one forward pass's worth per earlier step (as the tf/torch trajectory test)."""
    run_ = trajectories(tensorflow, arm, arch, optimizer)
    check_loss_trajectory(run_["tf"][0], run_["arm"][0], arm.name, arch, optimizer, device,
                          record_property)


def test_set_learning_rate_changes_the_step_as_in_tensorflow(tensorflow, arm, device, arch):
    """A recipe's schedule (Recipe.lr_decay, train.py) through set_learning_rate: one step at
    the recipe's lr (the step is traced and compiled there), then the lr cut tenfold for a
    second step, on each side. Plain SGD (no momentum), so each step is -lr x gradient: the
    arm's weights agree with TensorFlow's, and differ from TensorFlow's two steps at the
    unchanged lr (so a set_learning_rate that did nothing, or a compiled step that kept the
    old lr as a constant, fails). With BatchNorm in float64 too (its policy), where the
    difference from the unchanged lr is decided, as test_optimizer_steps decides its mutant."""
    recipe = replace(recipe_for(arch, "sgd"), momentum=0.0)
    data = batches(recipe)[:2]
    low = recipe.lr / 10
    initial = initial_weights(tensorflow, arch)
    runs = {"recipe": recipe, "initial": initial}
    unchanged = {"recipe": recipe, "initial": initial}   # TensorFlow at the unchanged lr
    for dtype in precisions(arch):
        tf_model, arm_model = shared_weights(tensorflow, arm, arch, dtype=dtype)
        sides = [(runs, "tf", tensorflow, tf_model, (recipe.lr, low)),
                 (runs, "arm", arm, arm_model, (recipe.lr, low))]
        if dtype == precisions(arch)[-1]:   # where the unchanged lr is told apart
            tf_unchanged = tensorflow.build(arch, seed=0, dtype=dtype)
            tensorflow.set_weights(tf_unchanged, {k: v.astype(dtype) for k, v in initial.items()})
            sides.append((unchanged, "tf", tensorflow, tf_unchanged, (recipe.lr, recipe.lr)))
        for out, side, fw, model, lrs in sides:
            optimizer = fw.make_optimizer(model, recipe)
            for (images, labels), lr in zip(data, lrs):
                if lr != recipe.lr:
                    fw.set_learning_rate(model, optimizer, lr)
                fw.train_step(model, optimizer, images.astype(dtype), labels)
            out[side + suffix(dtype)] = ([], {2: fw.get_weights(model)})
    what = (f"{arch.name}: weights after a step at lr {recipe.lr:g} and one at {low:g}, "
            f"{arm.name} vs tf")
    check_arm_weights(device, arch, runs, 2, what=what)
    if arch.batchnorm:
        check_float64_weights(runs, 2, runs["arm64"][1][2], what=f"{what} (float64)")
        with pytest.raises(AssertionError, match="max abs error"):
            check_float64_weights(unchanged, 2, runs["arm64"][1][2],
                                  what=f"{arm.name} with its lr cut against tf at the unchanged "
                                       "lr (float64)")
        return
    with pytest.raises(AssertionError, match="max abs error"):
        check_weights(device, recipe, initial, 2, runs["arm"][1][2], unchanged["tf"][1][2],
                      what=f"{arm.name} with its lr cut against tf at the unchanged lr")


def test_a_decaying_augmented_recipe_trains_on_an_arm(arm, arch, monkeypatch):
    """train.py's loop on an arm with a recipe that has an lr schedule and augmentation (as
    resnet8_short does): each epoch's lr reaches the worker, and every dataset the run sent
    (the test split, and the train split once per epoch) and its model are released there."""
    from types import SimpleNamespace

    from twinbench import train
    recipe = replace(next(r for r in RECIPES.values() if r.arch == arch.name), epochs=2,
                     lr_decay=0.5, augment="shift_flip")
    rng = np.random.default_rng(0)
    split = lambda n: SimpleNamespace(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                                      labels=rng.integers(0, 10, n))
    calls = {"lr": [], "data": [], "released": []}
    real = type(arm)
    monkeypatch.setattr(arm, "set_learning_rate", lambda model, optimizer, lr: (
        calls["lr"].append(lr), real.set_learning_rate(arm, model, optimizer, lr)))
    monkeypatch.setattr(arm, "prepare_data", lambda model, images, labels: (
        calls["data"].append(real.prepare_data(arm, model, images, labels)) or calls["data"][-1]))

    def release(model=None, optimizer=None, data=()):
        calls["released"] += list(data) + ([model] if model is not None else [])
        real.release(arm, model, optimizer, data)
    monkeypatch.setattr(arm, "release", release)
    run = train.train(arm, recipe, split(64), split(16), seed=3)
    assert len(run.epochs) == 2 and run.backend["keras_backend"] == arm.backend
    assert calls["lr"] == [recipe.lr, recipe.lr * 0.5]
    assert len(calls["data"]) == 2 + recipe.epochs   # train, test, then one per epoch
    assert sorted(d for d in calls["released"] if isinstance(d, int)) == sorted(calls["data"])
    fresh = arm.build(arch)
    try:
        for handle in calls["data"]:
            with pytest.raises(keras_backends.WorkerError, match=f"no dataset {handle} "):
                arm.evaluate(fresh, handle, batch_size=8)
    finally:
        arm.release(fresh)


# -- whole epochs and step timing (the accuracy and throughput tiers' calls) ----------------------
EPOCH_IMAGES = 64    # four batches of 16: a short epoch, enough to cross batch boundaries


def test_fit_epoch_and_evaluate_match_tensorflow(tensorflow, arm, device, arch, record_property):
    """One epoch of Keras's fit on each side, in the same shuffled order, with the
    architecture's reference recipe: the same weights after its 4 steps (the optimizer-step
    bounds for 4 steps; with BatchNorm its policy), the same mean loss, and the same accuracy
    over the data."""
    recipe = next(r for r in RECIPES.values() if r.arch == arch.name)
    rng = np.random.default_rng(1)
    images = recipe.prepare(rng.integers(0, 256, (EPOCH_IMAGES, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, EPOCH_IMAGES)
    order = rng.permutation(EPOCH_IMAGES)
    steps = EPOCH_IMAGES // BATCH
    runs = {"recipe": recipe, "initial": initial_weights(tensorflow, arch)}
    losses, accuracy = {}, {}
    for side, fw, model in zip(("tf", "arm"), (tensorflow, arm),
                               shared_weights(tensorflow, arm, arch)):
        data = fw.prepare_data(model, images, labels)
        losses[side] = fw.fit_epoch(model, fw.make_optimizer(model, recipe), data, BATCH, order)
        runs[side] = ([losses[side]], {steps: fw.get_weights(model)})
        accuracy[side] = fw.evaluate(model, data, batch_size=32)
    if arch.batchnorm:
        # The float64 references take the epoch's steps through train_step, in fit's order:
        # Keras's fit on TensorFlow cannot train a float64 model with L2 terms (its compiled
        # loss comes out in float32, and TensorFlow refuses to add it to the float64 L2
        # terms). The arm's train_step is Keras's own train step, the one its fit runs.
        batches64 = [(images[i].astype(np.float64), labels[i])
                     for i in np.split(order, steps)]
        for side, fw, model in zip(("tf", "arm"), (tensorflow, arm),
                                   shared_weights(tensorflow, arm, arch, dtype="float64")):
            runs[side + "64"] = run(fw, model, fw.make_optimizer(model, recipe), batches64)
            runs[side + "64"][1][steps] = fw.get_weights(model)
    errors = check_arm_weights(device, arch, runs, steps,
                               what=f"{arch.name} {recipe.name}: weights after one epoch, "
                                    f"{arm.name} vs tf")
    report(errors, f"{arm.name} {recipe.name} {device}-{arch.name} weights after one epoch",
           record_property)
    if arch.batchnorm:
        check_float64_weights(runs, steps, runs["arm64"][1][steps],
                              what=f"{arch.name} {recipe.name}: float64 weights after one "
                                   f"epoch, {arm.name} vs tf")
    tol = parity(device)
    compare({"epoch loss": np.array([losses["arm"]])}, {"epoch loss": np.array([losses["tf"]])},
            tol.loss, what=f"{arch.name} epoch loss, {arm.name} vs tf",
            floor={"epoch loss": steps * tol.loss_drift_per_step() * abs(losses["tf"])})
    # The logits agree to ~1e-6 of their size (test_logits_match_tensorflow): an argmax can
    # only flip on a near tie, which these 64 seeded images do not have.
    assert accuracy["arm"] == accuracy["tf"], accuracy


def test_recipe_settings_record_the_backend(arm):
    """What an accuracy row records about the arm: its backend, versions, step mode and
    threads (the worker's own count, which scripts/derive_gates.py groups seeds by)."""
    with arm.recipe_settings(RECIPES["lenet_sgd"]) as row:
        assert row["keras_backend"] == arm.backend and row["mode"] == arm.mode
        assert row["version:keras"].startswith("3."), row
        assert f"version:{arm.backend}" in row, row
        assert row["threads"] == int(arm.worker.info["threads"]) >= 1, row


TIMING_MODES = [
    "eager",
    # torch.compile's first steps (Inductor builds C++ kernels) took over 3 minutes on the
    # shared CPU box, so the compiled mode is outside the fast tier. (JAX's compiled step is
    # its default mode, run by every optimizer-step test above.)
    pytest.param("compiled", marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode", TIMING_MODES)
def test_step_timing_runs_in_each_mode(arm, arch, mode):
    """The throughput tier's call: per-step seconds, in the mode asked for."""
    model = arm.build(arch)
    optimizer = arm.make_optimizer(model, recipe_for(arch, "sgd"))
    images, labels = batch(arch)
    times = arm.time_steps(model, optimizer, images, labels, steps=2, warmup=1, mode=mode)
    assert times.compiled == (mode == "compiled"), f"Keras ran the {mode} mode with jit_compile={times.compiled}"
    assert len(times.seconds) == 2 and np.all(np.isfinite(times.seconds)), times.seconds
    assert np.all(times.seconds > 0), times.seconds


def test_throughput_row_of_an_arm(arm, results, tmp_path, monkeypatch):
    """The benchmark tier's call for an arm (bench.run_arm_case, the same protocol, timed in
    the worker): a row of the throughput schema that says which backend and mode ran, with
    one figure per timed round; the worker lets the case's model go afterwards."""
    from twinbench.results import read_rows, write_row
    tiny = bench.Protocol(rounds=3, warmup_rounds=1, round_s=0.005)
    released = []

    def release(model=None, optimizer=None, data=()):
        released.append(model)
        type(arm).release(arm, model, optimizer, data)
    monkeypatch.setattr(arm, "release", release)
    for phase in ("train", "infer"):
        case = bench.Case(arm.name, arm.device, "lenet", arm.mode, phase, 8)
        bench.run_arm_case(case, arm, protocol=tiny,
                           write=lambda row: write_row(tmp_path, {**results.common(), **row}))
    rows = {r["phase"]: r for r in read_rows(tmp_path)}   # validated against the schema
    assert set(rows) == {"train", "infer"}
    for row in rows.values():
        assert row["status"] == "ok", row["error"]
        assert row["keras_backend"] == arm.backend and row["mode"] == arm.mode
        assert len(row["images_per_s"]) == tiny.rounds and row["compile_s"] > 0
        assert row["protocol"]["timer"] == bench.ARM_TIMER
    assert len(released) == 2
    for model in released:   # gone from the worker (numbers are never reused)
        with pytest.raises(keras_backends.WorkerError, match=f"no model {model.net} "):
            arm.get_weights(model)


def test_arm_rows_name_their_backend_and_mode(arm, results):
    """The schema refuses an arm's throughput row with another backend or a TF/torch mode."""
    from twinbench.results import row_problems
    case = bench.Case(arm.name, "cpu", "lenet", "eager", "train", 8)
    row = {**results.common(), "kind": "throughput", "framework": arm.name, "arch": "lenet",
           "device": "cpu", "mode": "eager", "phase": "train", "batch_size": 8, "status": "ok",
           "error": None, "compile_s": 0.1, "threads": 2, "precision": {},
           "keras_backend": arm.backend,
           **bench.throughput_fields(case, models.get("lenet"), [100.0], None)}
    assert row_problems(row) == []
    other = "jax" if arm.backend == "torch" else "torch"
    assert any("needs 'keras_backend'" in p for p in row_problems({**row, "keras_backend": other}))
    assert any("has no mode 'xla'" in p for p in row_problems({**row, "mode": "xla"}))


def test_out_of_memory_in_the_worker_is_an_oom(arm):
    """An OOM inside the worker reaches the client as a WorkerError naming the backend's
    exception: the benchmark records it as an "oom" row, as for the other frameworks."""
    oom = keras_backends.WorkerError("keras-torch worker, request 'time_steps': "
                                     "OutOfMemoryError: CUDA out of memory. Tried to allocate")
    xla = keras_backends.WorkerError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    assert arm.is_oom(oom) and arm.is_oom(xla)
    assert not arm.is_oom(keras_backends.WorkerError("ValueError: shapes do not match"))
    assert not arm.is_oom(MemoryError("host"))


# -- the checks can fail ------------------------------------------------------------------------
def test_logits_catch_unpermuted_flatten(tensorflow, arm, device, arch):
    """The first dense layer's rows in torch's (C, H, W) flatten order instead of the canonical
    (H, W, C): the arm's logits then leave the bound."""
    if arch.flatten_chw[1:] == (1, 1):
        pytest.skip(f"{arch.name}: a 1x1 map enters Flatten, so both flatten orders agree "
                    "(nothing to permute)")
    tf_model, arm_model = shared_weights(tensorflow, arm, arch)
    weights = tensorflow.get_weights(tf_model)
    c, h, w = arch.flatten_chw
    kernel = weights[f"{arch.first_dense}/kernel"]
    weights[f"{arch.first_dense}/kernel"] = (kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3)
                                            .reshape(kernel.shape))
    arm.set_weights(arm_model, weights)
    images, _ = batch(arch)
    with pytest.raises(AssertionError, match="logits: max abs error"):
        compare({"logits": arm.forward(arm_model, images)},
                {"logits": tensorflow.forward(tf_model, images)}, parity(device).logits,
                what="logits")


def test_steps_catch_missing_momentum(tensorflow, arm, device, arch):
    """The arm's SGD without the recipe's momentum: the first step is the same (Keras's
    momentum buffer starts at zero), ten steps are far apart. With BatchNorm decided in
    float64, where the two sides agree (as test_optimizer_steps' default-Adam mutant)."""
    recipe = replace(recipe_for(arch, "sgd"), momentum=0.0)
    if arch.batchnorm:
        run_ = trajectories(tensorflow, arm, arch, "sgd")   # TensorFlow's float64 run, cached
        model = arm.build(arch, seed=1, dtype="float64")
        arm.set_weights(model, {k: v.astype(np.float64) for k, v in run_["initial"].items()})
        data = [(images.astype(np.float64), labels) for images, labels in batches(recipe)]
        _, weights = run(arm, model, arm.make_optimizer(model, recipe), data)
        check_float64_weights(run_, 1, weights[1],
                              what="float64 weights after 1 step without momentum")
        with pytest.raises(AssertionError, match="max abs error"):
            check_float64_weights(run_, STEPS, weights[STEPS],
                                  what="float64 weights after 10 steps without momentum")
        return
    run_ = trajectories(tensorflow, arm, arch, "sgd", recipe=recipe)
    check_weights(device, run_["recipe"], run_["initial"], 1, run_["arm"][1][1],
                  run_["tf"][1][1], what="weights after 1 step without momentum")
    with pytest.raises(AssertionError, match="max abs error"):
        check_weights(device, run_["recipe"], run_["initial"], STEPS, run_["arm"][1][STEPS],
                      run_["tf"][1][STEPS], what="weights after 10 steps without momentum")


# -- the worker's guard rails -----------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)


def test_worker_refuses_a_process_with_tensorflow():
    """A worker whose process already holds TensorFlow exits with the reason, before Keras.
    (A stand-in module marks TensorFlow as loaded: importing the real one takes many
    seconds, and the worker's check is whether the name is in sys.modules.)"""
    result = _python("import sys, types\n"
                     "sys.modules['tensorflow'] = types.ModuleType('tensorflow')\n"
                     "from twinbench.frameworks import keras_backend_worker as w\n"
                     "sys.exit(w.main(['--backend', 'jax']))")
    assert result.returncode == 3, result.stderr
    assert "TensorFlow is already imported in this process" in result.stderr
    assert "keras" not in result.stdout


def test_worker_blocks_later_tensorflow_imports():
    """Once the worker has chosen its backend, importing TensorFlow fails with the reason;
    asking whether it exists (torch._dynamo does) still works."""
    result = _python("import importlib.util\n"
                     "from twinbench.frameworks import keras_backend_worker as w\n"
                     "w.refuse_tensorflow('torch')\n"
                     "importlib.util.find_spec('tensorflow')\n"
                     "import tensorflow")
    assert result.returncode != 0
    assert ("ImportError: tensorflow must not be imported in the keras-torch worker"
            in result.stderr), result.stderr


def test_worker_error_is_raised_with_its_reason(arm):
    with pytest.raises(keras_backends.WorkerError, match="unknown architecture 'resnet999'"):
        arm.worker.call("build", arch="resnet999", seed=0, dtype="float32")


def own_worker() -> keras_backends.BackendWorker:
    """A fresh worker of this test's own (not the shared one), on the CPU: the channel and the
    process behave the same on any device. keras-jax where installed: it starts fastest."""
    reasons = {name: keras_backends.unavailable_reason(name, "cpu") for name in ARMS}
    available = [name for name, reason in reasons.items() if reason is None]
    if not available:
        pytest.skip("; ".join(reasons.values()))
    return keras_backends.BackendWorker(ARMS[available[-1]], "cpu")


def test_worker_shuts_down_cleanly():
    worker = own_worker()
    worker.call("build", arch="lenet", seed=0, dtype="float32")
    worker.close()
    assert worker.process.returncode == 0, worker.stderr_tail()


def test_dead_worker_gives_a_clear_error():
    """A worker killed under the client: the next request names the arm, the pid and the
    signal, instead of hanging or failing on a broken pipe."""
    worker = own_worker()
    backend, device = worker.backend, worker.device
    try:
        os.kill(worker.pid, signal.SIGKILL)
        worker.process.wait(timeout=30)
        with pytest.raises(keras_backends.WorkerDied,
                           match=rf"keras-{backend} worker on {device} \(pid {worker.pid}\) was "
                                 r"killed by SIGKILL, during request 'build'"):
            worker.call("build", arch="lenet", seed=0, dtype="float32")
    finally:
        worker.close()


def test_missing_backend_skips_with_the_reason(monkeypatch):
    real = keras_backends.importlib.util.find_spec
    monkeypatch.setattr(keras_backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "jaxlib" else real(name, *a))
    assert keras_backends.unavailable_reason("keras-jax") == (
        "keras-jax: jaxlib not installed in this environment (pip install -r requirements/jax.txt)")
    with pytest.raises(ValueError, match="unknown arm 'keras-mxnet'"):
        keras_backends.unavailable_reason("keras-mxnet")


def test_an_arm_that_cannot_run_skips_its_tier_items_with_the_reason(monkeypatch):
    """The accuracy, matrix and benchmark items get an arm through fixtures.frameworks.adapter:
    a backend that is not installed is a skip with the reason (and starts no worker)."""
    real = keras_backends.importlib.util.find_spec
    monkeypatch.setattr(keras_backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "jaxlib" else real(name, *a))
    monkeypatch.setattr(keras_backends, "BackendWorker", None)   # starting one would fail loudly
    with pytest.raises(pytest.skip.Exception, match="keras-jax: jaxlib not installed"):
        adapter("keras-jax", "cpu")


def test_resnet8_trains_a_step_on_the_tiers_adapter(arm):
    """What the accuracy, matrix and benchmark tiers get for resnet8 on an arm (through
    fixtures.frameworks.adapter, which no longer turns BatchNorm architectures away): it
    builds, and one step of its recipe moves every kernel and BatchNorm's moving statistics."""
    arch = models.get("resnet8")
    framework = adapter(arm.name, arm.device)
    recipe = next(r for r in RECIPES.values() if r.arch == arch.name)
    model = framework.build(arch)
    try:
        before = framework.get_weights(model)
        images, labels = batch(arch)
        loss = framework.train_step(model, framework.make_optimizer(model, recipe), images,
                                    labels)
        after = framework.get_weights(model)
    finally:
        framework.release(model)
    assert np.isfinite(loss), loss
    moving = [k for k in before if k.endswith(("/kernel", "/moving_mean", "/moving_variance"))]
    still = [k for k in moving if np.array_equal(after[k], before[k])]
    assert not still, f"one {recipe.name} step left {still} unchanged"


def test_float64_work_leaves_float32_runs_unchanged(arm):
    """A float64 model's requests run under switches of their own (the worker's _float64:
    Keras's float64 promotion kept, and JAX's x64): a float32 model's build, gradients (eager)
    and training step (the arm's default mode: compiled on JAX) are the same bits after float64
    work in the worker as before it. On lenet, the cheapest twin: the switches do not depend
    on the architecture, and its dense layers are where Keras's promotion would act."""
    arch = models.get("lenet")
    recipe = recipe_for(arch, "adam")
    images, labels = batch(arch)

    def float32_work():
        model = arm.build(arch, seed=7)
        weights = arm.get_weights(model)
        _, grads = arm.loss_and_gradients(model, images, labels, training=False)
        arm.train_step(model, arm.make_optimizer(model, recipe), images, labels)
        out = {"built": weights, "gradients": grads, "stepped": arm.get_weights(model)}
        arm.release(model)
        return out

    before = float32_work()
    model64 = arm.build(arch, seed=7, dtype="float64")
    arm.loss_and_gradients(model64, images, labels)
    arm.train_step(model64, arm.make_optimizer(model64, recipe), images, labels)
    assert arm.get_weights(model64)["conv1/kernel"].dtype == np.float64
    arm.release(model64)
    after = float32_work()
    for part in before:
        compare(after[part], before[part], tolerances.EXACT,
                what=f"{arm.name} float32 {part} after float64 work")
        assert all(v.dtype == np.float32 for v in after[part].values()), part


def test_the_resnet8_items_run_in_the_slow_tier():
    """SLOW_ARCHS marks this module's resnet8 items slow (fixtures/session.py): the default
    (fast) tier collects none of them, `-m slow` collects them, and lenet's stay in the fast
    tier. A collection in a subprocess, as a user's `pytest` would make it."""
    def collected(*args):
        out = subprocess.run([sys.executable, "-m", "pytest", __file__, "--collect-only", "-q",
                              "-p", "no:cacheprovider", *args], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return [line for line in out.stdout.splitlines() if "::" in line]

    fast, slow = collected(), collected("-m", "slow")
    of = lambda items, arch: [i for i in items if i.endswith(f"-{arch}]")]   # noqa: E731
    assert fast and not of(fast, "resnet8")
    assert of(fast, "lenet") and of(slow, "resnet8")
