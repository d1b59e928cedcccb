"""MNIST for the tools, through the training scripts' own loader: one definition of where the data comes from
and what it must look like (train_cnn.load_data checks every array)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import train_cnn
from mnistlab import UserError

IMAGE_SIZE = 28
INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # what every model here takes: raw pixels 0-255, one channel


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as uint8 images (N, 28, 28) and uint8 labels (N,), plus where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def first(self, train_size: int | None) -> Dataset:
        """Keep only the first ``train_size`` training images (quick runs); the test set stays whole."""
        if train_size is None:
            return self
        if train_size > len(self.x_train):
            raise UserError(
                f"--train-size {train_size} is larger than the {len(self.x_train)} training images in "
                f"{self.source}; use at most {len(self.x_train)}"
            )
        return Dataset(self.x_train[:train_size], self.y_train[:train_size], self.x_test, self.y_test, self.source)


def load(path: str | None = None) -> Dataset:
    """``--data PATH``, a Keras-style .npz (``python get_mnist.py`` makes one, or ``python get_mnist.py --from-idx
    DIR`` from the four MNIST IDX files in DIR), else ``keras.datasets.mnist``."""
    (x_train, y_train), (x_test, y_test) = train_cnn.load_data(path)
    return Dataset(x_train, y_train, x_test, y_test, str(path) if path else "keras.datasets.mnist")
