"""The Keras CNN of the TensorFlow reference program, in both frameworks.

Conv2D(32,3x3,relu) - MaxPool2 - Conv2D(64,3x3,relu) - MaxPool2 - Conv2D(64,3x3,relu) -
Flatten - Dense(64,relu) - Dense(10 logits). 122,570 parameters; 9.10 MFLOP forward per image.
"""
from __future__ import annotations

from models.spec import Architecture, Layer, conv_flops, dense_flops

NAME = "keras_cnn"


def torch_model():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class KerasCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, 3)
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(32, 64, 3)
            self.pool2 = nn.MaxPool2d(2)
            self.conv3 = nn.Conv2d(64, 64, 3)
            self.fc1 = nn.Linear(64 * 4 * 4, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):                     # x: NCHW float32
            x = self.pool1(F.relu(self.conv1(x)))
            x = self.pool2(F.relu(self.conv2(x)))
            x = F.relu(self.conv3(x))
            x = torch.flatten(x, 1)               # C, H, W order (Keras: H, W, C)
            x = F.relu(self.fc1(x))
            return self.fc2(x)

    return KerasCNN()


def keras_model(dtype: str = "float32"):
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((32, 32, 3), dtype=dtype),
        layers.Conv2D(32, 3, activation="relu", name="conv1", dtype=dtype),
        layers.MaxPooling2D(2, name="pool1", dtype=dtype),
        layers.Conv2D(64, 3, activation="relu", name="conv2", dtype=dtype),
        layers.MaxPooling2D(2, name="pool2", dtype=dtype),
        layers.Conv2D(64, 3, activation="relu", name="conv3", dtype=dtype),
        layers.Flatten(name="flatten", dtype=dtype),
        layers.Dense(64, activation="relu", name="fc1", dtype=dtype),
        layers.Dense(10, name="fc2", dtype=dtype),
    ], name=NAME)


SPEC = Architecture(
    name=NAME,
    layers=(
        Layer("conv1", "conv", (3, 3, 3, 32)),
        Layer("conv2", "conv", (3, 3, 32, 64)),
        Layer("conv3", "conv", (3, 3, 64, 64)),
        Layer("fc1", "dense", (1024, 64)),
        Layer("fc2", "dense", (64, 10)),
    ),
    flatten_chw=(64, 4, 4),
    first_dense="fc1",
    parameters=122_570,
    forward_flops=(conv_flops(30, 30, 3, 3, 3, 32) + conv_flops(13, 13, 3, 3, 32, 64)
                   + conv_flops(4, 4, 3, 3, 64, 64) + dense_flops(1024, 64) + dense_flops(64, 10)),
    torch_model=torch_model,
    keras_model=keras_model,
    feature_shapes=(("conv1", (30, 30, 32)), ("pool1", (15, 15, 32)), ("conv2", (13, 13, 64)),
                    ("pool2", (6, 6, 64)), ("conv3", (4, 4, 64)), ("fc1", (64,)), ("fc2", (10,))),
)
