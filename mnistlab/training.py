"""Small in-process fits for the learning lab's experiments, which train many small models: the training
scripts' own learning-rate schedule (train_cnn.one_cycle), no files, no backups, no progress bar."""

from __future__ import annotations

import math

import keras
import numpy as np

import compare
import train_cnn

EVAL_BATCH = 2048  # evaluation has no gradients: large batches are fastest


def quick_fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 1,
) -> dict[str, list[float]]:
    """Compile and fit ``model`` like the scripts do (Adam, one-cycle schedule, cross-entropy); return the history."""
    keras.utils.set_random_seed(seed)
    steps = math.ceil(len(train[0]) / batch_size) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(train_cnn.one_cycle(learning_rate, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        train[0][..., None],
        train[1],
        validation_data=(validation[0][..., None], validation[1]) if validation is not None else None,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Test loss and accuracy over all ``images``, with one compiled function (compare.predictor)."""
    probabilities = compare.predict_all(compare.predictor(model), images, EVAL_BATCH).astype(np.float64)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
    return loss, float((probabilities.argmax(axis=1) == labels).mean())
