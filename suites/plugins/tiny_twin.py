"""A throwaway third twin, for suites/test_plugins.py: everything a new architecture needs, in
one file. Conv2D(4, 3x3, relu) - MaxPool2 - Flatten - Dense(10 logits) in both frameworks,
and the recipe its benchmark step trains with.

Nothing in the project names it: the test registers SPEC and RECIPE at test time (a module
placed in models/ would be registered on import instead, and its recipe in twinbench/recipes.py).
"""
from __future__ import annotations

from models.spec import Architecture, Layer, conv_flops, dense_flops
from twinbench.recipes import Recipe

NAME = "tiny_twin"


def torch_model():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TinyTwin(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3)
            self.pool1 = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(4 * 15 * 15, 10)

        def forward(self, x):                     # x: NCHW float32
            x = self.pool1(F.relu(self.conv1(x)))
            return self.fc1(torch.flatten(x, 1))  # C, H, W order (Keras: H, W, C)

    return TinyTwin()


def keras_model(dtype: str = "float32"):
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((32, 32, 3), dtype=dtype),
        layers.Conv2D(4, 3, activation="relu", name="conv1", dtype=dtype),
        layers.MaxPooling2D(2, name="pool1", dtype=dtype),
        layers.Flatten(name="flatten", dtype=dtype),
        layers.Dense(10, name="fc1", dtype=dtype),
    ], name=NAME)


SPEC = Architecture(
    name=NAME,
    layers=(Layer("conv1", "conv", (3, 3, 3, 4)), Layer("fc1", "dense", (900, 10))),
    flatten_chw=(4, 15, 15),
    first_dense="fc1",
    parameters=3 * 3 * 3 * 4 + 4 + 900 * 10 + 10,   # 9,122: the layers above, counted by hand
    forward_flops=conv_flops(30, 30, 3, 3, 3, 4) + dense_flops(900, 10),
    torch_model=torch_model,
    keras_model=keras_model,
    feature_shapes=(("conv1", (30, 30, 4)), ("pool1", (15, 15, 4)), ("fc1", (10,))),
)

RECIPE = Recipe(name="tiny_twin_sgd", arch=NAME, optimizer="sgd", lr=1e-2, momentum=0.9,
                batch_size=8, epochs=1, preprocess="scale")
