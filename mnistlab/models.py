"""What every model here shares: the input it takes, and the augmentation layers.

The networks themselves are written out in the scripts that train them (train_cnn.py, train_dense.py; the
benchmark's classic baseline in mnistlab/baseline.py), so that a reader sees each one where it is used. Inputs
are raw pixels 0–255 of shape (28, 28, 1); Keras' functional models also accept (28, 28) and add the channel
axis. Rescaling (and augmentation, active only in training) are layers of each model, so a saved ``.keras``
file can be called on raw images by anyone, with no preprocessing code to copy.
"""

from __future__ import annotations

from mnistlab.data import IMAGE_SIZE, NUM_CLASSES

import keras
from keras import layers

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
__all__ = ["INPUT_SHAPE", "NUM_CLASSES", "augmentation"]


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
