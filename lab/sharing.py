"""Parameter sharing and pooling: how few weights a conv layer needs compared with a dense layer that gives
the same outputs, and how pooling shrinks what the classifier has to look at.

    python experiments.py sharing
"""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
from keras import layers

import train_cnn
from lab import Lab


def run(lab: Lab) -> None:
    conv = layers.Conv2D(32, 3)
    conv.build((None, 28, 28, 1))
    outputs = 26 * 26 * 32  # what that conv layer produces
    dense = layers.Dense(outputs)
    dense.build((None, 28 * 28))
    # train_cnn.py's CNN without its two pooling layers: the classifier then sees 22×22×64 maps, not 5×5×64.
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.ReLU()(layers.Conv2D(32, 5)(x))
    x = layers.ReLU()(layers.Conv2D(64, 3)(x))
    no_pool = keras.Model(inputs, layers.Dense(10)(layers.Dropout(0.25)(layers.Flatten()(x))))
    counts = {
        "Conv2D(32, 3×3)\n28×28 → 26×26×32": conv.count_params(),
        f"Dense({outputs:,})\n784 → 26×26×32": dense.count_params(),
        "CNN with pooling\n(train_cnn.py)": train_cnn.build_model().count_params(),
        "same CNN\nwithout pooling": no_pool.count_params(),
    }
    figure, axis = plt.subplots(figsize=(10, 4.8))
    bars = axis.bar(list(counts), list(counts.values()), color=["#1f77b4", "#ff7f0e", "#1f77b4", "#9467bd"])
    axis.set_yscale("log")
    axis.set(title="Parameters (log scale): sharing and pooling", ylabel="parameters")
    for bar, value in zip(bars, counts.values(), strict=True):
        axis.annotate(f"{value:,}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    figure.tight_layout()
    names = list(counts)
    lab.report(
        "sharing",
        figure,
        {"parameters": {k.replace("\n", " "): v for k, v in counts.items()}},
        (
            f"A 3×3 conv layer with 32 filters needs {counts[names[0]]:,} weights; a dense layer giving the same "
            f"26×26×32 outputs needs {counts[names[1]]:,} ({counts[names[1]] // counts[names[0]]:,}× more).",
            f"Pooling shrinks the maps the classifier sees: the CNN has {counts[names[2]]:,} parameters with pooling, "
            f"{counts[names[3]]:,} without.",
        ),
    )
