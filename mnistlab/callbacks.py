"""The Keras callbacks of a training run: epoch timing, the benchmark's test-accuracy tracker, and the backup
that --resume restores from."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from mnistlab import signals

import keras
import numpy as np


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training + validation of that epoch) to the logs the other callbacks see, and
    keeps ``fit_seconds``, the whole fit() call in this process."""

    fit_seconds = 0.0
    # For the line printed when a run is stopped: the epoch under way (0-based) and how many have finished.
    epoch: int | None = None
    finished = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.fit_started = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.fit_seconds = time.perf_counter() - self.fit_started

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.finished = epoch + 1
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.started


class TestAccuracyTracker(keras.callbacks.Callback):
    """For benchmarks only: test accuracy after every epoch, to find *when* a run first reaches a target.

    Placed after :class:`EpochTimer`, so its evaluation time is not counted in ``epoch_seconds``; the time it
    takes is kept in ``seconds`` so a benchmark can subtract it from the process wall-clock. It predicts with its
    own compiled function rather than ``model.evaluate``, which would re-trace the model's test function
    (shared with validation) and slow the epochs it is meant to measure. Nothing is ever decided on these
    numbers (no early stopping, no model selection): the test set is not used for tuning.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.images, self.labels = images, labels
        self.accuracies: list[float] = []
        self.epoch_seconds: list[float] = []
        self.seconds = 0.0
        self.predict = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from mnistlab.inference import predict_in_batches, predictor
        from mnistlab.training import EVAL_BATCH

        started = time.perf_counter()
        self.predict = self.predict or predictor(self.model)
        predicted = predict_in_batches(self.predict, self.images, EVAL_BATCH).argmax(axis=1)
        accuracy = float((predicted == self.labels).mean())
        self.seconds += time.perf_counter() - started
        self.accuracies.append(accuracy)
        if logs is not None:
            self.epoch_seconds.append(float(logs.get("epoch_seconds", 0.0)))
            logs["test_accuracy"] = accuracy


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, keeping two checkpoints: a checkpoint cut off mid-write (kill -9 or a full disk
    during a save) falls back to the one before it. Only the very first has none before it; then --resume
    starts over, saying so, instead of failing on the broken file."""

    def __init__(self, backup_dir: Path) -> None:
        super().__init__(str(backup_dir), double_checkpoint=True, delete_checkpoint=False)
        self.saved: int | None = None  # epochs whose backup is complete: where --resume would go on from

    def on_train_begin(self, logs: dict | None = None) -> None:
        try:
            super().on_train_begin(logs)
        except OSError:
            print("the backup was cut off while it was being written (killed mid-save?): starting over", flush=True)
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.saved is None:  # the first epoch of this process: the backup holds everything before it
            self.saved = epoch
        super().on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)  # writes the backup; only then does the epoch count as saved
        self.saved = epoch + 1


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C and SIGTERM during fit() take effect between two steps (or two validation batches), never in the
    middle of TensorFlow's own code; at an epoch's end only after its backup (so: last in the callback list)."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        signals.stops.deferred = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.stop_if_asked()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.stop_if_asked()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.stop_if_asked()

    def on_train_end(self, logs: dict | None = None) -> None:
        signals.stops.deferred = False
        self.stop_if_asked()

    @staticmethod
    def stop_if_asked() -> None:
        stops = signals.stops
        if stops.pending is not None:
            stop, stops.pending, stops.deferred = stops.pending, None, False
            raise stop
