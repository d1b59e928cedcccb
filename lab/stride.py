"""Stride and padding: the output size of one real Conv2D layer for strides 1–4, with valid and same padding.

python experiments.py stride
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from keras import layers

from lab import Lab


def run(lab: Lab) -> None:
    edge = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)  # a vertical-edge (Sobel) kernel
    digit = lab.data.x_test[0].astype(np.float32)[None, :, :, None] / 255
    strides, paddings = (1, 2, 3, 4), ("valid", "same")
    sizes: dict[str, dict[str, list[int]]] = {}
    figure, axes = plt.subplots(len(paddings), len(strides), figsize=(3.2 * len(strides), 3.4 * len(paddings)))
    for row, padding in enumerate(paddings):
        sizes[padding] = {}
        for col, step in enumerate(strides):
            conv = layers.Conv2D(1, 3, strides=step, padding=padding, use_bias=False)
            conv.build((None, 28, 28, 1))
            conv.set_weights([edge[:, :, None, None]])
            fmap = np.asarray(conv(digit))[0, :, :, 0]
            sizes[padding][str(step)] = list(fmap.shape)
            axes[row, col].imshow(fmap, cmap="coolwarm")
            axes[row, col].set(title=f"stride {step}, {padding}: {fmap.shape[0]}×{fmap.shape[1]}", xticks=[], yticks=[])
    figure.suptitle("One 3×3 edge detector on a 28×28 digit: output size = ⌈(28 − k + 1) / s⌉ (valid), ⌈28 / s⌉ (same)")
    figure.tight_layout()
    lab.report(
        "stride",
        figure,
        {"kernel": 3, "input": 28, "output_sizes": sizes},
        (
            "Valid padding: " + ", ".join(f"stride {s} → {v[0]}×{v[1]}" for s, v in sizes["valid"].items()) + ".",
            "Same padding: "
            + ", ".join(f"stride {s} → {v[0]}×{v[1]}" for s, v in sizes["same"].items())
            + "; a larger stride shrinks the map like pooling, but skips positions instead of keeping the strongest.",
        ),
    )
