"""The saved models, and the layers whose outputs are a CNN's feature maps.

Loading (safe mode, checked), batched prediction and timing are compare.py's own (``compare.load_model``,
``compare.predict_all``, ``compare.speed``): one definition, used everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

import compare


def load_saved_models(models_dir: str | os.PathLike[str]) -> dict[str, keras.Model]:
    """Both saved models from ``models_dir``, each checked; a missing one names the command that makes it."""
    return {
        name: compare.load_model(str(Path(models_dir) / f"{name}.keras"), made_by)
        for name, made_by in compare.MODELS.items()
    }


def network_inside(model: keras.Model) -> keras.Model:
    """The network that does the work: ``model`` itself, or the one it holds as a layer and averages over shifted
    views of the digit (train_cnn.py --preset best, ``with_shifted_views``)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(isinstance(inner, keras.layers.Conv2D) for inner in layer.layers):
            return layer
    return model


def first_conv_kernels(model: keras.Model) -> tuple[keras.layers.Layer, np.ndarray]:
    """The first Conv2D layer and its kernels as ``(filters, height, width)``, for a one-channel input."""
    conv = next(layer for layer in network_inside(model).layers if isinstance(layer, keras.layers.Conv2D))
    return conv, np.moveaxis(np.asarray(conv.kernel)[:, :, 0, :], -1, 0)


def feature_map_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose outputs are a CNN's feature maps: every ReLU and max-pooling (every Conv2D if the model
    has neither, e.g. activations inside the convolutions); for a model of shifted views, its network's."""
    layers = network_inside(model).layers
    wanted = [layer for layer in layers if isinstance(layer, keras.layers.ReLU | keras.layers.MaxPooling2D)]
    return wanted or [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
