"""Dropout: the overfitting gap with and without it, and proof that it is off at inference.

python experiments.py dropout
"""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
import numpy as np

import train_dense
from lab import Lab
from mnistlab import training


def run(lab: Lab) -> None:
    size, epochs = lab.size(2000), lab.epochs(40)
    (x, y), (xv, yv) = lab.slices(size)
    histories = {}
    for rate in (0.0, 0.5):
        keras.utils.set_random_seed(lab.args.seed)
        model = train_dense.build_model(dropout=rate)
        histories[rate] = training.quick_fit(
            model, (x, y), (xv, yv), epochs=epochs, batch_size=64, learning_rate=1e-3, seed=lab.args.seed
        )
    sample = lab.data.x_test[:8].astype(np.float32)
    same = bool(np.array_equal(np.asarray(model(sample, training=False)), np.asarray(model(sample, training=False))))
    differ = not np.allclose(np.asarray(model(sample, training=True)), np.asarray(model(sample, training=True)))

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True)
    for axis, (rate, history) in zip(axes, histories.items(), strict=True):
        axis.plot(history["loss"], label="training loss")
        axis.plot(history["val_loss"], label="validation loss")
        axis.set(
            title=f"Dense network, dropout {rate}: validation accuracy {history['val_accuracy'][-1]:.1%}",
            xlabel="epoch",
            ylabel="cross-entropy loss",
            yscale="log",
        )
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    figure.tight_layout()
    # Overfitting shows in the validation loss: it climbs back from its minimum while training loss keeps falling.
    gap = {rate: h["val_loss"][-1] - h["loss"][-1] for rate, h in histories.items()}
    rise = {rate: h["val_loss"][-1] - min(h["val_loss"]) for rate, h in histories.items()}
    lab.report(
        "dropout",
        figure,
        {
            "train_size": size,
            "epochs": epochs,
            "histories": {str(k): v for k, v in histories.items()},
            "gap": {str(k): v for k, v in gap.items()},
            "validation_loss_rise": {str(k): v for k, v in rise.items()},
            "inference_is_deterministic": same,
            "training_mode_is_random": differ,
        },
        (
            f"On {size:,} images, validation loss ends {gap[0.0]:.2f} above training loss without dropout and "
            f"{gap[0.5]:.2f} with dropout 0.5 (climbing {rise[0.0]:.2f} vs {rise[0.5]:.2f} back from its best): "
            "dropout narrows the overfitting gap.",
            f"Dropout is off at inference (same input → same output: {same}) and on in training mode (outputs differ: "
            f"{differ}).",
        ),
    )
