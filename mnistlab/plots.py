"""Figures. Every figure is saved atomically as PNG, drawn with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, works over SSH and in CI
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

from mnistlab import records  # noqa: E402

COLORS = {"cnn": "#1f77b4", "dense": "#ff7f0e"}
LABELS = {"cnn": "CNN", "dense": "Dense"}


def save(figure: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``figure`` as PNG atomically and close it."""
    with records.atomic_path(path) as temp:
        figure.savefig(temp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return Path(path)


def bar_panel(
    axis: plt.Axes,
    *,
    names: Sequence[str],
    values: Sequence[float],
    title: str,
    fmt: str,
    log: bool = False,
    ylim: tuple[float, float] | None = None,
) -> None:
    """One bar per model, each labelled with its value."""
    bars = axis.bar([LABELS.get(n, n) for n in names], values, color=[COLORS.get(n, "grey") for n in names])
    axis.set_title(title)
    if log:
        axis.set_yscale("log")
    if ylim:
        axis.set_ylim(*ylim)
    for bar, value in zip(bars, values, strict=True):
        axis.annotate(
            fmt.format(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )


def comparison_figure(rows: dict[str, dict[str, Any]], histories: dict[str, list[dict[str, float]]]) -> plt.Figure:
    """Six panels: accuracy, training time, parameters, inference speed, and two views of the learning curves."""
    names = list(rows)
    figure, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    accuracies = [rows[n]["test_accuracy"] * 100 for n in names]
    panels = [
        (axes[0, 0], accuracies, "Test accuracy (%)", "{:.2f}%", False, (max(0.0, min(accuracies) - 1.0), 100)),
        (axes[0, 1], [rows[n]["training_seconds"] for n in names], "Training time (s)", "{:.1f} s", False, None),
        (axes[0, 2], [rows[n]["parameters"] for n in names], "Parameters (log scale)", "{:,.0f}", True, None),
        (axes[1, 0], [rows[n]["images_per_second"] for n in names], "Inference (images/s)", "{:,.0f}", False, None),
    ]
    for axis, values, title, fmt, log, ylim in panels:
        bar_panel(axis, names=names, values=values, title=title, fmt=fmt, log=log, ylim=ylim)
    for name in names:
        epochs = histories[name]
        val = [row["val_accuracy"] * 100 for row in epochs]
        elapsed, total = [], 0.0
        for row in epochs:
            total += row["epoch_seconds"]
            elapsed.append(total)
        style = {"color": COLORS.get(name, "grey"), "marker": "o", "label": LABELS.get(name, name)}
        axes[1, 1].plot(range(1, len(val) + 1), val, **style)
        axes[1, 2].plot(elapsed, val, **style)
    axes[1, 1].set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="%")
    axes[1, 2].set(title="Validation accuracy against training time", xlabel="seconds of training", ylabel="%")
    for axis in (axes[1, 1], axes[1, 2]):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("CNN vs. dense network on MNIST", fontsize=14)
    figure.tight_layout()
    return figure


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
