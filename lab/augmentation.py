"""Augmentation: randomly rotated, zoomed and shifted digits help most when there is little data.

python experiments.py augmentation
"""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
import numpy as np

import train_cnn
from lab import Lab, test_accuracy
from mnistlab import training


def run(lab: Lab) -> None:
    keras.utils.set_random_seed(lab.args.seed)
    augment = train_cnn.augmentation()
    originals = lab.data.x_train[:6].astype(np.float32)[..., None] / 255
    samples = [np.asarray(augment(originals, training=True))[..., 0] for _ in range(5)]
    sizes = [s for s in (500, 1000, 5000) if s <= lab.size(5000)] or [lab.size(5000)]
    accuracy: dict[str, dict[str, float]] = {"plain": {}, "augmented": {}}
    for size in sizes:
        (x, y), (xv, yv) = lab.slices(size)
        epochs = lab.epochs(max(8, 40_000 // size))  # a similar number of steps for every size
        for kind, by_size in accuracy.items():
            keras.utils.set_random_seed(lab.args.seed)
            model = train_cnn.build_model(augment=kind == "augmented")
            training.quick_fit(model, (x, y), (xv, yv), epochs=epochs, batch_size=64, seed=lab.args.seed)
            by_size[str(size)] = test_accuracy(model, lab.data.x_test, lab.data.y_test)

    figure = plt.figure(figsize=(15, 5))
    grid_axes = figure.subplots(6, 6, gridspec_kw={"left": 0.02, "right": 0.42, "wspace": 0.05, "hspace": 0.05})
    for row in range(6):
        for col in range(6):
            image = originals[row, :, :, 0] if col == 0 else samples[col - 1][row]
            grid_axes[row, col].imshow(image, cmap="gray")
            grid_axes[row, col].axis("off")
    grid_axes[0, 0].set_title("original", fontsize=9)
    grid_axes[0, 3].set_title("random rotation, zoom, shift", fontsize=9)
    chart = figure.add_axes((0.5, 0.12, 0.47, 0.78))
    for kind, values in accuracy.items():
        chart.plot([int(s) for s in values], [v * 100 for v in values.values()], marker="o", label=kind)
    chart.set(xscale="log", xlabel="training images", ylabel="test accuracy (%)", title="CNN test accuracy")
    chart.grid(alpha=0.3, which="both")
    chart.legend()
    smallest = str(sizes[0])
    lab.report(
        "augmentation",
        figure,
        {"sizes": sizes, "test_accuracy": accuracy},
        (
            f"With {smallest} training images, augmentation moves test accuracy from {accuracy['plain'][smallest]:.1%} "
            f"to {accuracy['augmented'][smallest]:.1%}.",
            "Across sizes: "
            + ", ".join(f"{s}: {accuracy['plain'][str(s)]:.1%} → {accuracy['augmented'][str(s)]:.1%}" for s in sizes)
            + " — the less data, the more new views of it help.",
        ),
    )
