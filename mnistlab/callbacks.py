"""The benchmark's Keras callbacks: epoch and fit timing, and test accuracy after every epoch."""

from __future__ import annotations

import time

import keras
import numpy as np

import compare


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training + validation of that epoch) to the logs the later callbacks see."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.started


class FitTimer(keras.callbacks.Callback):
    """From the start of ``fit`` to its end, every callback's work included (it comes last)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.seconds = time.perf_counter() - self.started


class TestAccuracyTracker(keras.callbacks.Callback):
    """For benchmarks only: test accuracy after every epoch, to find *when* a run first reaches a target.

    Placed after the callback that times an epoch, so its evaluation is not counted in ``epoch_seconds``; the time
    it takes is kept in ``seconds``, for the benchmark to subtract from the process's wall-clock. It predicts with
    Keras' ``predict_on_batch`` (compare.py's ``predict_all``) rather than ``model.evaluate``, which would re-trace
    the model's test function (shared with validation) and slow the epochs it measures. Nothing is decided on these
    numbers (no early stopping, no model selection): the test set is not used for tuning.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.images, self.labels = images, labels
        self.accuracies: list[float] = []
        self.epoch_seconds: list[float] = []
        self.seconds = 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        started = time.perf_counter()
        predicted = compare.predict_all(self.model, self.images).argmax(axis=1)
        self.accuracies.append(float((predicted == self.labels).mean()))
        self.seconds += time.perf_counter() - started
        self.epoch_seconds.append(float((logs or {}).get("epoch_seconds", 0.0)))
