"""The toolbox's figures, each saved atomically as a PNG: the benchmark's and predict.py's. (compare.py and the
lesson notebook draw their own.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

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
