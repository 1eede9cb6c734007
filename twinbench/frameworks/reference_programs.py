"""The two reference programs' training loops, as published, for side-by-side timing.

These are deliberately not the suite's implementation: they are what the suite must match
(recipe) and beat (speed). Only the data source differs: both read the same in-memory uint8
arrays the suite loads, instead of downloading CIFAR-10.
"""
from __future__ import annotations

import time

import numpy as np

from twinbench import imports


def keras_tutorial_epochs(train, test, epochs: int = 1, seed: int = 0) -> tuple[float, float]:
    """The TensorFlow tutorial: Sequential CNN, model.fit(batch 32, validation on the test
    split each epoch). Returns (seconds of fit, its validation included, final validation
    accuracy).

    Unseeded, as published (`seed` is accepted for symmetry and ignored): with a global seed
    (keras.utils.set_random_seed), Keras 3's fit on NumPy arrays under TensorFlow replays the
    same sample permutation every epoch (checked on keras 3.15.1 / TF 2.21: three epochs of a
    seeded fit saw one order; unseeded, three different ones), and the recipe then lands about
    3 points lower (66.1-66.2% against 69.2-69.7% with a fresh order each epoch, JPEG copy)."""
    imports.tensorflow()
    import keras
    from keras import layers
    train_images, test_images = train.images / 255.0, test.images / 255.0   # float64, as published
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    history = model.fit(train_images, train.labels, epochs=epochs, verbose=0,
                        validation_data=(test_images, test.labels))
    return time.perf_counter() - t0, float(history.history["val_accuracy"][-1])


def torch_tutorial_epochs(train, test, epochs: int = 1, seed: int = 0) -> tuple[float, float]:
    """The PyTorch tutorial: DataLoader over PIL images with ToTensor + Normalize, batch 4,
    shuffle, num_workers=2, SGD(lr 0.001, momentum 0.9), loss.item() every step, then one
    evaluation on the test split. Returns (seconds of training and that evaluation, final test
    accuracy): each side's own evaluation is inside its clock, as the TensorFlow program's
    per-epoch validation is inside `fit` (docs/methodology.md#reference-programs)."""
    torch = imports.torch()
    import torchvision.transforms as transforms
    from PIL import Image
    from torch import nn, optim

    import models
    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])

    class Arrays(torch.utils.data.Dataset):   # what torchvision.datasets.CIFAR10 does per item
        def __init__(self, split):
            self.images, self.labels = split.images, split.labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(self.images[i])), int(self.labels[i])

    trainloader = torch.utils.data.DataLoader(Arrays(train), batch_size=4, shuffle=True,
                                              num_workers=2)
    testloader = torch.utils.data.DataLoader(Arrays(test), batch_size=4, shuffle=False,
                                             num_workers=2)
    net = models.get("lenet").torch_model()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    t0 = time.perf_counter()
    for _epoch in range(epochs):
        running_loss = 0.0
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    correct = 0
    with torch.no_grad():
        for images, labels in testloader:
            correct += int((net(images).argmax(1) == labels).sum())
    return time.perf_counter() - t0, correct / len(test.labels)


def subset(split, n: int, seed: int = 0):
    """The first-n-of-a-permutation subset of a split (for timing on part of an epoch)."""
    from types import SimpleNamespace
    idx = np.random.default_rng(seed).permutation(len(split.labels))[:n]
    return SimpleNamespace(images=split.images[idx], labels=split.labels[idx])


def mlperf_tiny_epochs(train, test, epochs: int = 1, seed: int = 0) -> tuple[float, float]:
    """MLPerf Tiny's image-classification training program (mlcommons/tiny,
    benchmark/training/image_classification: keras_model.resnet_v1_eembc with 16 base filters
    and train.py): ImageDataGenerator(rotation 15, shifts 0.1, horizontal flips) over raw
    0..255 pixels, Adam() with LearningRateScheduler(1e-3 * 0.99 ** epoch), categorical
    cross-entropy on softmax outputs and one-hot labels, fit(batch 32), as published (500
    epochs there); the test split is evaluated once at the end. Returns (seconds of fit, final
    test accuracy). Unseeded, as published (`seed` is accepted for symmetry and ignored)."""
    tf = imports.tensorflow()
    from tensorflow.keras.layers import (Activation, AveragePooling2D, BatchNormalization,
                                         Conv2D, Dense, Flatten, Input)
    from tensorflow.keras.models import Model
    from tensorflow.keras.regularizers import l2

    def conv(num_filters, kernel_size, strides):
        return Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding='same',
                      kernel_initializer='he_normal', kernel_regularizer=l2(1e-4))

    def resnet_v1_eembc(num_filters=16):
        inputs = Input(shape=[32, 32, 3])
        x = Activation('relu')(BatchNormalization()(conv(num_filters, 3, 1)(inputs)))
        y = Activation('relu')(BatchNormalization()(conv(num_filters, 3, 1)(x)))      # first stack
        y = BatchNormalization()(conv(num_filters, 3, 1)(y))
        x = Activation('relu')(tf.keras.layers.add([x, y]))
        for stack_filters in (num_filters * 2, num_filters * 4):                     # second, third
            y = Activation('relu')(BatchNormalization()(conv(stack_filters, 3, 2)(x)))
            y = BatchNormalization()(conv(stack_filters, 3, 1)(y))
            x = conv(stack_filters, 1, 2)(x)
            x = Activation('relu')(tf.keras.layers.add([x, y]))
        pool_size = int(np.amin(x.shape[1:3]))
        x = AveragePooling2D(pool_size=pool_size)(x)
        outputs = Dense(10, activation='softmax', kernel_initializer='he_normal')(Flatten()(x))
        return Model(inputs=inputs, outputs=outputs)

    def lr_schedule(epoch):
        return 0.001 * (0.99 ** epoch)

    datagen = tf.keras.preprocessing.image.ImageDataGenerator(
        rotation_range=15, width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True)
    train_labels = tf.keras.utils.to_categorical(train.labels, 10)
    datagen.fit(train.images)
    model = resnet_v1_eembc()
    model.compile(optimizer=tf.keras.optimizers.Adam(), loss='categorical_crossentropy',
                  metrics=['accuracy'])
    t0 = time.perf_counter()
    model.fit(datagen.flow(train.images, train_labels, batch_size=32), epochs=epochs,
              callbacks=[tf.keras.callbacks.LearningRateScheduler(lr_schedule)], verbose=0)
    seconds = time.perf_counter() - t0
    probabilities = model.predict(test.images.astype(np.float32), batch_size=1000, verbose=0)
    return seconds, float(np.mean(probabilities.argmax(1) == test.labels))
