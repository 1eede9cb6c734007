"""One training run of a recipe in one framework, the way the reference programs train:
full training split, the recipe's batch size and optimizer, shuffled each epoch, final-epoch
test accuracy. Both frameworks draw each epoch's order from the same seeded NumPy RNG, so
twins given the same initial weights also see the same data in the same order."""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

import models
from twinbench import augment


@dataclass
class Epoch:
    epoch: int
    loss: float
    test_accuracy: float
    seconds: float        # training time of this epoch (evaluation excluded)


@dataclass
class Run:
    framework: str
    device: str
    arch: str
    recipe: str
    seed: int
    epochs: list[Epoch] = field(default_factory=list)
    initial_weights: str | None = None     # digest of the starting weights
    backend: dict = field(default_factory=dict)
    threshold: float | None = None

    @property
    def final_accuracy(self) -> float:
        return self.epochs[-1].test_accuracy

    @property
    def train_seconds(self) -> float:
        return sum(e.seconds for e in self.epochs)

    def images_per_s(self, n_train: int) -> float:
        return n_train * len(self.epochs) / self.train_seconds

    @property
    def time_to_threshold_s(self) -> float | None:
        """Training seconds until the first epoch at or above the threshold."""
        if self.threshold is None:
            return None
        elapsed = 0.0
        for e in self.epochs:
            elapsed += e.seconds
            if e.test_accuracy >= self.threshold:
                return elapsed
        return None

    def row(self, n_train: int, data_source) -> dict:
        """The result row of this run (common fields are added by the results writer)."""
        return {"kind": "accuracy", "framework": self.framework, "arch": self.arch,
                "device": self.device, "recipe": self.recipe, "seed": self.seed,
                "data": {"source": data_source.name, "digest": data_source.digest},
                "epochs": [asdict(e) for e in self.epochs],
                "final_accuracy": self.final_accuracy, "threshold": self.threshold,
                "train_seconds": self.train_seconds, "images_per_s": self.images_per_s(n_train),
                "time_to_threshold_s": self.time_to_threshold_s, "comparison": None,
                "initial_weights": self.initial_weights, "backend": self.backend}


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool = True) -> np.ndarray:
    """The sample order of one epoch, identical for every framework given the same seed."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(np.ascontiguousarray(weights[name], dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def train(framework, recipe, train_set, test_set, *, seed: int,
          initial_weights: dict[str, np.ndarray] | None = None,
          threshold: float | None = None,
          progress: Callable[[str], None] | None = None) -> Run:
    """Train `recipe` with `framework` (an adapter) and evaluate after every epoch."""
    arch = models.get(recipe.arch)
    model = framework.build(arch, seed=seed)
    if initial_weights is not None:
        framework.set_weights(model, initial_weights)
    run = Run(framework=framework.name, device=framework.device, arch=arch.name,
              recipe=recipe.name, seed=seed, threshold=threshold,
              initial_weights=weights_digest(framework.get_weights(model)))
    with framework.recipe_settings(recipe) as backend:
        run.backend = backend
        _train_epochs(framework, model, recipe, train_set, test_set, seed, run, progress)
    return run


def _train_epochs(framework, model, recipe, train_set, test_set, seed, run, progress) -> None:
    optimizer = framework.make_optimizer(model, recipe)
    prepared = recipe.prepare(train_set.images)
    train_data = framework.prepare_data(model, prepared, train_set.labels)
    test_data = framework.prepare_data(model, recipe.prepare(test_set.images), test_set.labels)
    # An adapter whose objects live in another process (the Keras-backend arms' workers) is
    # told when they are done with (`release`); the in-process adapters leave it to Python.
    release = getattr(framework, "release", None)
    n = len(train_set.labels)
    started = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        order = epoch_order(seed, epoch, n, recipe.shuffle)
        if recipe.lr_decay != 1.0:
            framework.set_learning_rate(model, optimizer, recipe.lr * recipe.lr_decay ** (epoch - 1))
        if recipe.augment:   # the same NumPy images for every framework, outside the timed epoch
            images = augment.augment(prepared, augment.get(recipe.augment), augment.epoch_rng(seed, epoch))
            if release is not None:
                release(data=(train_data,))   # the copy the previous epoch trained on
            train_data = framework.prepare_data(model, images, train_set.labels)
        framework.synchronize()
        t0 = time.perf_counter()
        loss = framework.fit_epoch(model, optimizer, train_data, recipe.batch_size, order)
        framework.synchronize()
        seconds = time.perf_counter() - t0
        accuracy = framework.evaluate(model, test_data)
        run.epochs.append(Epoch(epoch, loss, accuracy, seconds))
        if progress:
            elapsed = time.perf_counter() - started
            remaining = elapsed / epoch * (recipe.epochs - epoch)
            progress(f"{framework.name}/{recipe.name} seed {seed} epoch {epoch}/{recipe.epochs}: "
                     f"loss {loss:.4f}, test accuracy {accuracy:.2%}, {n / seconds:,.0f} img/s, "
                     f"elapsed {elapsed:,.0f} s, about {remaining:,.0f} s to go")
    if release is not None:
        release(model, optimizer, data=(train_data, test_data))
