"""Training recipes as data: one frozen dataclass each, overridden with dataclasses.replace.
RECIPES is the registry (options, result rows and the benchmark read it); `register` adds one.

The two reference programs (docs/methodology.md#reference-programs):
- keras_cnn_adam: the TensorFlow tutorial's Keras CNN, inputs /255, Adam (Keras defaults,
  lr 1e-3, epsilon 1e-7 in its "epsilon hat" placement), batch 32, 10 epochs.
- lenet_sgd: the PyTorch tutorial's LeNet, inputs (x - 0.5) / 0.5, SGD lr 1e-3 momentum 0.9,
  batch 4, 10 epochs, shuffled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twinbench.choices import lookup


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    optimizer: str                 # "adam" (Keras semantics in both frameworks) or "sgd"
    lr: float
    batch_size: int
    epochs: int
    preprocess: str                # "scale": x / 255;  "center": (x / 255 - 0.5) / 0.5
    momentum: float = 0.0          # sgd only
    beta_1: float = 0.9            # adam only
    beta_2: float = 0.999
    epsilon: float = 1e-7          # adam only: Keras's default, added to sqrt(v) after bias correction
    shuffle: bool = True
    reference_framework: str = ""  # the framework of the published program
    reference_accuracy: float = 0.0  # what the published program reports (canonical CIFAR-10)
    lr_decay: float = 1.0          # epoch e (from 1) trains at lr * lr_decay ** (e - 1), as Keras's
                                   # LearningRateScheduler(lr0 * decay ** epoch_index) does
    augment: str = ""              # a twinbench.augment.AUGMENTATIONS name, drawn per epoch from the seed
    in_matrix: bool = True         # `-m matrix` runs it unless --recipe selects otherwise; False for
                                   # a recipe too long to cross with every architecture by default
    gate_frameworks: tuple[str, ...] = ()  # frameworks `-m accuracy` trains and gates it in; empty:
                                   # the reference framework alone (a published program's own)

    def __post_init__(self):
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"recipe {self.name}: unknown optimizer {self.optimizer!r}")
        if self.preprocess not in PREPROCESSING:
            raise ValueError(f"recipe {self.name}: unknown preprocessing {self.preprocess!r}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"recipe {self.name}: batch size and epochs must be >= 1")

    @property
    def gated_in(self) -> tuple[str, ...]:
        """The frameworks the accuracy tier gates this recipe in (none: not in the tier)."""
        if self.gate_frameworks:
            return self.gate_frameworks
        return (self.reference_framework,) if self.reference_framework else ()

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NHWC with this recipe's normalization (the NumPy boundary)."""
        return PREPROCESSING[self.preprocess](images)


def _scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def _raw(images: np.ndarray) -> np.ndarray:
    # MLPerf Tiny's train.py feeds ImageDataGenerator's float32 pixels, 0..255, unscaled
    return images.astype(np.float32)


def _center(images: np.ndarray) -> np.ndarray:
    # torchvision's ToTensor then Normalize((0.5,)*3, (0.5,)*3), in the same float32 order
    return (images.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


PREPROCESSING = {"scale": _scale, "center": _center, "raw": _raw}

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe; a second recipe under the same name is refused."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered already")
    RECIPES[recipe.name] = recipe
    return recipe


def for_arch(arch: str) -> Recipe:
    """The architecture's own recipe (the first registered that trains it): its optimizer and
    input normalization are what the benchmark's training step of that architecture uses."""
    for recipe in RECIPES.values():
        if recipe.arch == arch:
            return recipe
    raise ValueError(f"no recipe trains architecture {arch!r}; register one in "
                     f"twinbench/recipes.py (recipes: {', '.join(RECIPES)})")


for _recipe in (
    Recipe(name="keras_cnn_adam", arch="keras_cnn", optimizer="adam", lr=1e-3, batch_size=32,
           epochs=10, preprocess="scale", epsilon=1e-7, reference_framework="tf",
           reference_accuracy=0.71),
    Recipe(name="lenet_sgd", arch="lenet", optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=4,
           epochs=10, preprocess="center", reference_framework="torch",
           reference_accuracy=0.6367),
    # About 10 minutes per framework on a 2-core AVX-512 host (docs/methodology.md#resnet8):
    # the published optimizer and batch, 8 epochs with the lr decayed 10x over the run (0.72 per
    # epoch) instead of 0.99 over 500, shifts and flips but no rotation (a short run underfits;
    # rotation's interpolation blur slows it further), inputs /255. 16 epochs were planned
    # from an estimate; the first measured epoch (75 s of TensorFlow training) halved them.
    # Gated in both frameworks by `-m accuracy` (no published program to reproduce: the gate
    # guards the twins themselves); too long for CI's slowest host class (methodology#resnet8).
    Recipe(name="resnet8_short", arch="resnet8", optimizer="adam", lr=1e-3, batch_size=32,
           epochs=8, preprocess="scale", lr_decay=0.72, augment="shift_flip",
           gate_frameworks=("tf", "torch")),
    # MLPerf Tiny's train.py, as published: Adam (Keras defaults), lr 1e-3 x 0.99 per epoch,
    # batch 32, 500 epochs, rotation/shift/flip augmentation, raw pixels; the benchmark's
    # quality target is 85% top-1. Far too long for a CPU host (docs/methodology.md#resnet8).
    Recipe(name="resnet8_mlperf_tiny", arch="resnet8", optimizer="adam", lr=1e-3, batch_size=32,
           epochs=500, preprocess="raw", lr_decay=0.99, augment="mlperf_tiny",
           reference_framework="tf", reference_accuracy=0.85, in_matrix=False),
):
    register(_recipe)


def get(name: str) -> Recipe:
    return lookup(RECIPES, name, "recipe")
