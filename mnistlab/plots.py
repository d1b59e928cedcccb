"""The toolbox's figures, each saved atomically as a PNG. (compare.py draws its own.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from compare import COLORS
from mnistlab import records

LABELS = {"cnn": "CNN", "dense": "Dense"}


def save(figure: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``figure`` as PNG atomically and close it."""
    with records.atomic_path(path) as temp:
        figure.savefig(temp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return Path(path)


def benchmark_figure(runs: dict[str, list[dict[str, Any]]]) -> plt.Figure:
    """Test accuracy against training seconds, one curve per run (per-epoch test accuracy)."""
    figure, axis = plt.subplots(figsize=(9, 5.5))
    palette = {"baseline": "#7f7f7f", "cnn": COLORS["cnn"], "dense": COLORS["dense"], "cnn-best": "#2ca02c"}
    for name, records_ in runs.items():
        for index, record in enumerate(records_):
            elapsed, total = [], 0.0
            for seconds in record["epoch_seconds"]:
                total += seconds
                elapsed.append(total)
            axis.plot(
                elapsed,
                [a * 100 for a in record["epoch_test_accuracy"]],
                marker=".",
                alpha=0.8,
                color=palette.get(name, "black"),
                label=name if index == 0 else None,
            )
    axis.axhline(99.0, color="black", linewidth=0.8, linestyle="--")
    axis.set(
        xscale="log",
        xlabel="training seconds (log scale)",
        ylabel="test accuracy (%)",
        title="Test accuracy against training time, every benchmark run",
        ylim=(96, 100),
    )
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    return figure


def prediction_figure(digit, probabilities: dict[str, Any], title: str) -> plt.Figure:
    """The prepared 28×28 input beside each model's probability bars."""
    figure, axes = plt.subplots(1, 1 + len(probabilities), figsize=(4 + 4 * len(probabilities), 3.4))
    axes[0].imshow(digit, cmap="gray")
    axes[0].set(title=f"{title}\nas the models see it", xticks=[], yticks=[])
    for axis, (name, probs) in zip(axes[1:], probabilities.items(), strict=True):
        axis.bar(range(10), probs, color=COLORS.get(name, "grey"))
        axis.set(
            title=f"{LABELS.get(name, name)}: {int(probs.argmax())} ({probs.max():.1%})",
            xticks=range(10),
            ylim=(0, 1),
            xlabel="digit",
            ylabel="probability",
        )
    figure.tight_layout()
    return figure


def grid(count: int, columns: int) -> tuple[int, int]:
    return max(1, -(-count // columns)), min(count, columns)


def kernels_figure(model) -> plt.Figure:
    """The first Conv2D layer's kernels, each drawn as a small grey image (bright = positive weight)."""
    from mnistlab.inference import first_conv_kernels  # TensorFlow: only for the figures that need a model

    conv, kernels = first_conv_kernels(model)  # (filters, h, w)
    rows, cols = grid(len(kernels), 8)
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.3))
    limit = np.abs(kernels).max()
    for index, axis in enumerate(np.ravel(axes)):
        axis.axis("off")
        if index < len(kernels):
            axis.imshow(kernels[index], cmap="gray", vmin=-limit, vmax=limit)
    figure.suptitle(
        f"The {len(kernels)} kernels of {conv.name} ({kernels.shape[1]}×{kernels.shape[2]}): "
        "learned stroke and edge detectors"
    )
    figure.tight_layout()
    return figure


def feature_maps(model, image) -> list[tuple[str, np.ndarray]]:
    """Activations of one image after every Conv2D / ReLU-ed conv / pooling layer of a CNN."""
    import keras

    from mnistlab.inference import feature_map_layers

    wanted = feature_map_layers(model)
    probe = keras.Model(model.inputs, [layer.output for layer in wanted])
    outputs = probe([np.asarray(image, dtype=np.float32).reshape(1, 28, 28, 1)], training=False)
    return [
        (layer.name, np.asarray(output, dtype=np.float32)[0]) for layer, output in zip(wanted, outputs, strict=True)
    ]


def feature_maps_figure(image, maps: list[tuple[str, np.ndarray]], per_layer: int = 8) -> plt.Figure:
    """One row per layer: the first ``per_layer`` channels of its feature maps."""
    figure, axes = plt.subplots(len(maps), per_layer + 1, figsize=(1.4 * (per_layer + 1), 1.5 * len(maps)))
    axes = np.atleast_2d(axes)
    for row, (name, fmap) in enumerate(maps):
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].set_ylabel(f"{name}\n{fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}", fontsize=8)
        axes[row, 0].set(xticks=[], yticks=[])
        for col in range(per_layer):
            axis = axes[row, col + 1]
            axis.axis("off")
            if col < fmap.shape[-1]:
                axis.imshow(fmap[:, :, col], cmap="viridis")
    figure.suptitle("Feature maps layer by layer (input on the left): edges first, abstract patterns deeper")
    figure.tight_layout()
    return figure


def confusion_matrix(truth, predicted, classes: int = 10) -> list[list[int]]:
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (np.asarray(truth), np.asarray(predicted)), 1)
    return matrix.tolist()


def confusion_figure(matrices: dict[str, list[list[int]]]) -> plt.Figure:
    """Confusion matrices side by side, on a log colour scale so the rare mistakes show."""
    from matplotlib.colors import LogNorm

    figure, axes = plt.subplots(1, len(matrices), figsize=(6.5 * len(matrices), 5.8))
    for axis, (name, matrix) in zip(np.ravel(axes), matrices.items(), strict=True):
        values = np.array(matrix)
        axis.imshow(values + 1, cmap="Blues", norm=LogNorm())
        for (row, col), count in np.ndenumerate(values):
            if count:
                axis.text(
                    col, row, str(count), ha="center", va="center", fontsize=7, color="white" if row == col else "black"
                )
        errors = values.sum() - np.trace(values)
        axis.set(
            title=f"{LABELS.get(name, name)}: {errors} errors",
            xlabel="predicted",
            ylabel="true",
            xticks=range(10),
            yticks=range(10),
        )
    figure.tight_layout()
    return figure


def misclassified_figure(images, labels, probabilities: dict[str, np.ndarray], shown: int) -> plt.Figure:
    """For each model, up to ``shown`` wrongly classified test digits: true → predicted (confidence)."""
    cols = 12
    rows_per_model = max(1, -(-shown // cols))
    figure, axes = plt.subplots(
        rows_per_model * len(probabilities), cols, figsize=(cols * 1.1, 1.45 * rows_per_model * len(probabilities))
    )
    axes = np.atleast_2d(axes)
    for block, (name, probs) in enumerate(probabilities.items()):
        wrong = np.flatnonzero(probs.argmax(axis=1) != labels)[:shown]
        for slot in range(rows_per_model * cols):
            axis = axes[block * rows_per_model + slot // cols, slot % cols]
            axis.axis("off")
            if slot < len(wrong):
                index = wrong[slot]
                axis.imshow(images[index], cmap="gray")
                guess = int(probs[index].argmax())
                axis.set_title(
                    f"{labels[index]}→{guess} {probs[index, guess]:.0%}", fontsize=8, color=COLORS.get(name, "black")
                )
        axes[block * rows_per_model, 0].text(
            -0.4,
            0.5,
            LABELS.get(name, name),
            transform=axes[block * rows_per_model, 0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=11,
        )
    figure.suptitle("Misclassified test digits: true → predicted (confidence)")
    figure.tight_layout()
    return figure
