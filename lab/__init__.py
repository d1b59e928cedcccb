"""The learning lab: one small experiment per file, each run by ``python experiments.py NAME``.

Every experiment is a ``run(lab)`` function that trains or probes real Keras models, then calls
:meth:`Lab.report` with its figure, its numbers and a two-line conclusion written from those numbers. The
networks come from the training scripts themselves (``train_cnn.build_model``, ``train_dense.build_model``),
so every figure is made from the models a reader sees there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
from matplotlib.figure import Figure

from mnistlab import data, plots, records, training

VALIDATION_IMAGES = 1000  # held out of the end of the training images by every experiment that trains


class Lab:
    """What every experiment needs: the data, the output folder, the flags, and a way to report."""

    def __init__(self, args, dataset: data.Dataset, results_dir: Path) -> None:
        self.args, self.data, self.results_dir = args, dataset, results_dir

    def size(self, default: int) -> int:
        """Training images for this experiment: --train-size, else its own default (leaving the validation slice)."""
        return min(self.args.train_size or default, len(self.data.x_train) - VALIDATION_IMAGES)

    def epochs(self, default: int) -> int:
        return self.args.epochs or default

    def slices(self, size: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The first ``size`` training images, and the last 1,000 training images for validation."""
        d = self.data
        return (d.x_train[:size], d.y_train[:size]), (d.x_train[-VALIDATION_IMAGES:], d.y_train[-VALIDATION_IMAGES:])

    def report(self, name: str, figure: Figure, numbers: dict[str, Any], conclusion: tuple[str, str]) -> None:
        """Write results/exp_<name>.png and .json (atomically) and print the conclusion."""
        plots.save(figure, self.results_dir / f"exp_{name}.png")
        records.write_json(self.results_dir / f"exp_{name}.json", {**numbers, "conclusion": list(conclusion)})
        print(f"[{name}] {conclusion[0]}\n[{name}] {conclusion[1]}", flush=True)


def test_accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    return training.evaluate(model, images, labels)[1]
