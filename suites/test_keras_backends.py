"""The Keras twins on Keras 3's torch and JAX backends compute what they compute on TensorFlow.

Each arm runs the architecture's unchanged `keras_model()` in a worker process of its own
(twinbench/frameworks/keras_backends.py). The TensorFlow twin is built here, its initial
weights go to the arm through the canonical layout, and both see the same batches: logits,
loss, gradients, and the recipes' Adam and SGD after 1 and 10 steps must agree within the
same float32 bounds as the TensorFlow/torch parity (twinbench/tolerances.py; the measured
errors per arm in docs/methodology.md#parity). The comparisons reuse the TensorFlow/torch suites'
helpers, so that one bound means one thing. The last tests check the worker's guard rails.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from test_optimizer_steps import (CHECKPOINTS, OPTIMIZERS, STEPS, batches, check_loss_trajectory,
                                  check_weights, recipe_for, run)
from test_parity import BATCH, batch

import models
from fixtures.frameworks import adapter
from twinbench import bench
from twinbench.agreement import compare, report
from twinbench.frameworks import keras_backends
from twinbench.frameworks.keras_backends import ARMS, KerasBackendFramework
from twinbench.recipes import RECIPES
from twinbench.tolerances import parity


@pytest.fixture(autouse=True)
def _no_batchnorm_arm_yet(request):
    """Not done yet (integration of resnet8, open): the Keras-backend workers' loss leaves out
    the L2 regularization terms, their gradients leave out BatchNorm's moving statistics and
    they take no training= mode, so a BatchNorm architecture cannot be compared there yet."""
    arch = request.node.callspec.params.get("arch") if hasattr(request.node, "callspec") else None
    if arch is not None and getattr(arch, "batchnorm", False):
        pytest.skip(f"{arch.name}: the Keras-backend workers do not support BatchNorm "
                    "architectures yet (L2 terms, moving statistics, training=); open")


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


def shared_weights(tensorflow, arm, arch, seed: int = 0):
    """(tf model, arm model) with the tf twin's initial weights in both (the arm is built
    from another seed, so a set_weights that did nothing could not pass)."""
    tf_model, arm_model = tensorflow.build(arch, seed=seed), arm.build(arch, seed=seed + 1)
    arm.set_weights(arm_model, tensorflow.get_weights(tf_model))
    return tf_model, arm_model


_OUTPUTS: dict = {}


@pytest.fixture
def outputs(tensorflow, arm, arch):
    """Logits, loss and gradients of the TensorFlow twin and of the arm on one batch."""
    key = (arm.name, tensorflow.device, arch.name)
    if key not in _OUTPUTS:
        tf_model, arm_model = shared_weights(tensorflow, arm, arch)
        images, labels = batch(arch)
        _OUTPUTS[key] = {side: (fw.forward(model, images), *fw.loss_and_gradients(model, images, labels))
                         for side, fw, model in (("tf", tensorflow, tf_model), ("arm", arm, arm_model))}
    return _OUTPUTS[key]


def test_logits_match_tensorflow(outputs, arm, device, arch, record_property):
    errors = compare({"logits": outputs["arm"][0]}, {"logits": outputs["tf"][0]},
                     parity(device).logits, what=f"{arch.name} logits, {arm.name} vs tf")
    report(errors, f"{arm.name} {device}-{arch.name} logits", record_property)


def test_loss_matches_tensorflow(outputs, arm, device, arch, record_property):
    errors = compare({"loss": outputs["arm"][1]}, {"loss": outputs["tf"][1]},
                     parity(device).loss, what=f"{arch.name} loss, {arm.name} vs tf")
    report(errors, f"{arm.name} {device}-{arch.name} loss", record_property)


def test_gradients_match_tensorflow(outputs, arm, device, arch, record_property):
    errors = compare(outputs["arm"][2], outputs["tf"][2], parity(device).gradients,
                     what=f"{arch.name} gradients, {arm.name} vs tf")
    report(errors, f"{arm.name} {device}-{arch.name} gradients", record_property)


# -- optimizer steps ------------------------------------------------------------------------------
_TRAJECTORIES: dict = {}


def trajectories(tensorflow, arm, arch, optimizer: str, recipe=None):
    """Both sides' runs of STEPS steps from the tf twin's initial weights on the same batches;
    computed once per (arm, device, arch, optimizer) unless a recipe is given."""
    key = (arm.name, tensorflow.device, arch.name, optimizer)
    if recipe is None and key in _TRAJECTORIES:
        return _TRAJECTORIES[key]
    reference = recipe_for(arch, optimizer)
    tf_model, arm_model = shared_weights(tensorflow, arm, arch)
    initial = {k: v.copy() for k, v in tensorflow.get_weights(tf_model).items()}
    data = batches(reference)
    out = dict(recipe=reference, initial=initial,
               tf=run(tensorflow, tf_model, tensorflow.make_optimizer(tf_model, reference), data),
               arm=run(arm, arm_model, arm.make_optimizer(arm_model, recipe or reference), data))
    if recipe is None:
        _TRAJECTORIES[key] = out
    return out


@pytest.mark.parametrize("steps", CHECKPOINTS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_weights_after_steps_match_tensorflow(tensorflow, arm, device, arch, optimizer, steps,
                                              record_property):
    run_ = trajectories(tensorflow, arm, arch, optimizer)
    errors = check_weights(device, run_["recipe"], run_["initial"], steps,
                           run_["arm"][1][steps], run_["tf"][1][steps],
                           what=f"{arch.name} {optimizer}: weights after {steps} step(s), "
                                f"{arm.name} vs tf")
    report(errors, f"{arm.name} {optimizer} {device}-{arch.name} weights after {steps} step(s)",
           record_property)


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
    old lr as a constant, fails)."""
    recipe = replace(recipe_for(arch, "sgd"), momentum=0.0)
    data = batches(recipe)[:2]
    low = recipe.lr / 10
    tf_model, arm_model = shared_weights(tensorflow, arm, arch)
    initial = {k: v.copy() for k, v in tensorflow.get_weights(tf_model).items()}
    after = {}
    for side, fw, model, lrs in (("tf", tensorflow, tf_model, (recipe.lr, low)),
                                 ("arm", arm, arm_model, (recipe.lr, low)),
                                 ("tf unchanged", tensorflow, None, (recipe.lr, recipe.lr))):
        if model is None:
            model = tensorflow.build(arch, seed=0)
            tensorflow.set_weights(model, initial)
        optimizer = fw.make_optimizer(model, recipe)
        for (images, labels), lr in zip(data, lrs):
            if lr != recipe.lr:
                fw.set_learning_rate(model, optimizer, lr)
            fw.train_step(model, optimizer, images, labels)
        after[side] = fw.get_weights(model)
    check_weights(device, recipe, initial, 2, after["arm"], after["tf"],
                  what=f"{arch.name}: weights after a step at lr {recipe.lr:g} and one at "
                       f"{low:g}, {arm.name} vs tf")
    with pytest.raises(AssertionError, match="max abs error"):
        check_weights(device, recipe, initial, 2, after["arm"], after["tf unchanged"],
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
    bounds for 4 steps), the same mean loss, and the same accuracy over the data."""
    recipe = next(r for r in RECIPES.values() if r.arch == arch.name)
    rng = np.random.default_rng(1)
    images = recipe.prepare(rng.integers(0, 256, (EPOCH_IMAGES, 32, 32, 3), dtype=np.uint8))
    labels = rng.integers(0, 10, EPOCH_IMAGES)
    order = rng.permutation(EPOCH_IMAGES)
    tf_model, arm_model = shared_weights(tensorflow, arm, arch)
    initial = tensorflow.get_weights(tf_model)
    losses, weights, accuracy = {}, {}, {}
    for side, fw, model in (("tf", tensorflow, tf_model), ("arm", arm, arm_model)):
        data = fw.prepare_data(model, images, labels)
        losses[side] = fw.fit_epoch(model, fw.make_optimizer(model, recipe), data, BATCH, order)
        weights[side] = fw.get_weights(model)
        accuracy[side] = fw.evaluate(model, data, batch_size=32)
    steps = EPOCH_IMAGES // BATCH
    errors = check_weights(device, recipe, initial, steps, weights["arm"], weights["tf"],
                           what=f"{arch.name} {recipe.name}: weights after one epoch, "
                                f"{arm.name} vs tf")
    report(errors, f"{arm.name} {recipe.name} {device}-{arch.name} weights after one epoch",
           record_property)
    tol = parity(device)
    compare({"epoch loss": np.array([losses["arm"]])}, {"epoch loss": np.array([losses["tf"]])},
            tol.loss, what=f"{arch.name} epoch loss, {arm.name} vs tf",
            floor={"epoch loss": steps * tol.loss_drift_per_step() * abs(losses["tf"])})
    # The logits agree to ~1e-6 of their size (test_logits_match_tensorflow): an argmax can
    # only flip on a near tie, which these 64 seeded images do not have.
    assert accuracy["arm"] == accuracy["tf"], accuracy


def test_recipe_settings_record_the_backend(arm):
    """What an accuracy row records about the arm: its backend, versions and step mode."""
    with arm.recipe_settings(RECIPES["lenet_sgd"]) as row:
        assert row["keras_backend"] == arm.backend and row["mode"] == arm.mode
        assert row["version:keras"].startswith("3."), row
        assert f"version:{arm.backend}" in row, row


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
    momentum buffer starts at zero), ten steps are far apart."""
    recipe = replace(recipe_for(arch, "sgd"), momentum=0.0)
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
    a backend that is not installed, or an architecture the workers do not support yet, is a
    skip with the reason (and starts no worker)."""
    real = keras_backends.importlib.util.find_spec
    monkeypatch.setattr(keras_backends.importlib.util, "find_spec",
                        lambda name, *a: None if name == "jaxlib" else real(name, *a))
    monkeypatch.setattr(keras_backends, "BackendWorker", None)   # starting one would fail loudly
    with pytest.raises(pytest.skip.Exception, match="keras-jax: jaxlib not installed"):
        adapter("keras-jax", "cpu", models.get("lenet"))
    with pytest.raises(pytest.skip.Exception, match="keras-torch: resnet8 has BatchNorm"):
        adapter("keras-torch", "cpu", models.get("resnet8"))
