"""Model builders. Every model takes raw pixels and preprocesses inside itself.

Inputs are uint8-valued pixels 0–255 of shape (28, 28, 1); Keras' functional models also accept (28, 28)
and add the channel axis. Rescaling (and augmentation, active only in training) are layers of the model, so a
saved ``.keras`` file can be called on raw images by anyone, with no preprocessing code to copy.
"""

from __future__ import annotations

import keras
from keras import layers

from mnistlab.data import IMAGE_SIZE, NUM_CLASSES

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


def augmentation(rotation: float = 0.04, zoom: float = 0.1, shift: float = 0.1) -> keras.Sequential:
    """Small random rotations, zooms and shifts: digits written a little differently. Off at inference."""
    return keras.Sequential(
        [
            layers.RandomRotation(rotation, fill_mode="constant"),
            layers.RandomZoom(zoom, fill_mode="constant"),
            layers.RandomTranslation(shift, shift, fill_mode="constant"),
        ],
        name="augmentation",
    )


def pixels_in(augment: bool = False) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The shared front of every model: raw pixels in, [0, 1] floats out (augmented while training)."""
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if augment:
        x = augmentation()(x)
    return inputs, x


def classes_out(x: keras.KerasTensor) -> keras.KerasTensor:
    """Ten class probabilities, computed in float32 even under mixed precision (stable softmax and loss)."""
    return layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)


def build_cnn(
    filters: tuple[int, ...] = (32, 64),
    kernel_sizes: tuple[int, ...] = (5, 3),
    dropout: float = 0.25,
    augment: bool = False,
) -> keras.Model:
    """The project's CNN: [Conv2D → ReLU → MaxPooling2D] per block → Flatten → Dropout → Dense softmax.

    Why these choices (measured, see README): a 5×5 first kernel sees whole pen strokes and costs little on a
    one-channel input; the 3×3 second block combines them; each 2×2 max-pool halves the map, so the dense
    head sees 5×5×64 features instead of 28×28 pixels — 35k parameters in all. Dropout 0.25 rather than 0.5:
    over 5 short epochs the lighter dropout measured ~0.1 point better (0.5 is for long training).
    """
    inputs, x = pixels_in(augment)
    for block, (count, size) in enumerate(zip(filters, kernel_sizes, strict=True), start=1):
        x = layers.Conv2D(count, size, name=f"conv{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classes_out(x), name="cnn")


def build_best_cnn(augment: bool = True) -> keras.Model:
    """The ``--preset best`` CNN: two conv layers per block, a wider dense head, trained longer on augmented digits.

    Same idea as :func:`build_cnn` — convolutions, ReLU, max-pooling, dropout, dense — but deeper and wider.
    No batch normalisation, on purpose: Keras 3's BatchNormalization is not a fused op, and here it made each
    training step 3× slower (measured, README "Performance notes"); that time buys more epochs of augmented digits.
    """
    inputs, x = pixels_in(augment)
    for block, count in enumerate((32, 64), start=1):
        for layer in (1, 2):
            x = layers.Conv2D(count, 3, padding="same", name=f"conv{block}_{layer}")(x)
            x = layers.ReLU(name=f"relu{block}_{layer}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        x = layers.Dropout(0.25, name=f"dropout{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, name="dense")(x)
    x = layers.ReLU(name="dense_relu")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    return keras.Model(inputs, classes_out(x), name="cnn_best")


def build_classic_cnn() -> keras.Model:
    """The classic Keras "Simple MNIST convnet" recipe: the benchmark's baseline, kept exactly as published."""
    inputs, x = pixels_in()
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inputs, classes_out(x), name="classic_cnn")


def build_dense(units: tuple[int, ...] = (512, 512), dropout: float = 0.5, augment: bool = False) -> keras.Model:
    """A plain fully connected network: Flatten → [Dense → ReLU → Dropout] per layer → Dense softmax.

    It sees the image as 784 unrelated numbers: no notion that neighbouring pixels belong together.
    """
    inputs, x = pixels_in(augment)
    x = layers.Flatten(name="flatten")(x)
    for index, count in enumerate(units, start=1):
        x = layers.Dense(count, activation="relu", name=f"dense{index}")(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    return keras.Model(inputs, classes_out(x), name="dense")
