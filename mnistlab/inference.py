"""Loading saved models safely, and measuring how fast they answer.

Keras' ``predict()`` builds a fresh input pipeline on every call — fine for a million images, slow for one
(tens of milliseconds for one image: docs/performance.md). A ``tf.function`` over ``model(x, training=False)`` with a
batch-agnostic signature compiles once and then answers in well under a millisecond.
"""

from __future__ import annotations

import os
import statistics
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from mnistlab import UserError
from mnistlab.models import INPUT_SHAPE

import keras
import numpy as np
import tensorflow as tf

Predictor = Callable[[np.ndarray], np.ndarray]


def load_model(path: str | os.PathLike[str], made_by: str) -> keras.Model:
    """Load a ``.keras`` file with safe mode on (no arbitrary code), or explain in one line what to do."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run `{made_by}` first")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable Keras model ({detail}); run `{made_by}` again") from None
    shape = tuple(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    if shape not in (INPUT_SHAPE, INPUT_SHAPE[:2]):
        raise UserError(f"{path} takes inputs of shape {shape}, not 28×28×1 MNIST images; run `{made_by}` again")
    return model


def load_saved_models(models_dir: str | os.PathLike[str]) -> dict[str, keras.Model]:
    """Both saved models (``cli.SAVED_MODELS``) from ``models_dir``, each checked by :func:`load_model`."""
    from mnistlab.cli import SAVED_MODELS

    return {name: load_model(Path(models_dir) / f"{name}.keras", made_by) for name, made_by in SAVED_MODELS.items()}


def feature_map_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers whose outputs are a CNN's feature maps: every ReLU and max-pooling (every Conv2D if the model
    has neither, e.g. activations inside the convolutions)."""
    wanted = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU | keras.layers.MaxPooling2D)]
    return wanted or [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def predictor(model: keras.Model) -> Predictor:
    """A compiled ``images -> probabilities`` function for any batch size (uint8 or float pixels 0–255)."""
    compiled = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)],
    )

    def predict(images: np.ndarray) -> np.ndarray:
        batch = np.asarray(images, dtype=np.float32).reshape(-1, *INPUT_SHAPE)
        return compiled(batch).numpy()

    return predict


def predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    return np.concatenate([predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)])


def throughput(predict: Predictor, images: np.ndarray, batch_size: int = 4096, repeats: int = 3) -> float:
    """Images per second over ``images`` at ``batch_size``: the best of ``repeats`` passes after a warm-up."""
    predict(images[:batch_size])  # compile and warm caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict_in_batches(predict, images, batch_size)
        best = min(best, time.perf_counter() - started)
    return len(images) / best


def latency_ms(predict: Predictor, image: np.ndarray, repeats: int = 200) -> float:
    """Median milliseconds to classify one image, after a warm-up."""
    one = image[None, ...]
    for _ in range(10):
        predict(one)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(one)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000
