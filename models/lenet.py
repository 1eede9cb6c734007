"""The LeNet of the PyTorch reference program, in both frameworks.

Conv2d(3,6,5) - MaxPool2 - Conv2d(6,16,5) - MaxPool2 - Linear(400,120) - Linear(120,84) -
Linear(84,10), ReLU after every layer but the last. 62,006 parameters; 1.30 MFLOP forward.
"""
from __future__ import annotations

from models.spec import Architecture, Layer, conv_flops, dense_flops

NAME = "lenet"


def torch_model():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool2 = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):                     # x: NCHW float32
            x = self.pool1(F.relu(self.conv1(x)))
            x = self.pool2(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)               # C, H, W order (Keras: H, W, C)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return LeNet()


def keras_model(dtype: str = "float32"):
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((32, 32, 3), dtype=dtype),
        layers.Conv2D(6, 5, activation="relu", name="conv1", dtype=dtype),
        layers.MaxPooling2D(2, name="pool1", dtype=dtype),
        layers.Conv2D(16, 5, activation="relu", name="conv2", dtype=dtype),
        layers.MaxPooling2D(2, name="pool2", dtype=dtype),
        layers.Flatten(name="flatten", dtype=dtype),
        layers.Dense(120, activation="relu", name="fc1", dtype=dtype),
        layers.Dense(84, activation="relu", name="fc2", dtype=dtype),
        layers.Dense(10, name="fc3", dtype=dtype),
    ], name=NAME)


SPEC = Architecture(
    name=NAME,
    layers=(
        Layer("conv1", "conv", (5, 5, 3, 6)),
        Layer("conv2", "conv", (5, 5, 6, 16)),
        Layer("fc1", "dense", (400, 120)),
        Layer("fc2", "dense", (120, 84)),
        Layer("fc3", "dense", (84, 10)),
    ),
    flatten_chw=(16, 5, 5),
    first_dense="fc1",
    parameters=62_006,
    forward_flops=(conv_flops(28, 28, 5, 5, 3, 6) + conv_flops(10, 10, 5, 5, 6, 16)
                   + dense_flops(400, 120) + dense_flops(120, 84) + dense_flops(84, 10)),
    torch_model=torch_model,
    keras_model=keras_model,
    feature_shapes=(("conv1", (28, 28, 6)), ("pool1", (14, 14, 6)), ("conv2", (10, 10, 16)),
                    ("pool2", (5, 5, 16)), ("fc1", (120,)), ("fc2", (84,)), ("fc3", (10,))),
)
