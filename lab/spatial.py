"""Do CNNs use the picture's layout? Shift the test digits by 0–6 pixels and see which network copes; then
shuffle every image's pixels by one fixed permutation and retrain both: the dense network does as well as
before, while the CNN loses its lead.

    python experiments.py spatial
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import train_cnn
import train_dense
from lab import Lab, test_accuracy
from mnistlab import inference, training
from mnistlab.images import shift


def run(lab: Lab) -> None:
    d = lab.data
    saved = inference.load_saved_models(lab.args.models_dir)
    shifts = list(range(7))
    shifted = {
        name: [test_accuracy(model, shift(d.x_test, s), d.y_test) for s in shifts] for name, model in saved.items()
    }

    size, epochs = lab.size(10000), lab.epochs(4)
    permutation = np.random.default_rng(lab.args.seed).permutation(28 * 28)

    def scramble(images: np.ndarray) -> np.ndarray:
        """The same fixed permutation of the 784 pixels for every image: the layout is gone, the values stay."""
        return images.reshape(len(images), -1)[:, permutation].reshape(images.shape)

    def unchanged(images: np.ndarray) -> np.ndarray:
        return images

    (x, y), (xv, yv) = lab.slices(size)
    builders = {"cnn": train_cnn.build_model, "dense": train_dense.build_model}
    retrained = {}
    for name, build in builders.items():
        for order, transform in (("original", unchanged), ("shuffled", scramble)):
            model = build()
            training.quick_fit(model, (transform(x), y), (transform(xv), yv), epochs=epochs, seed=lab.args.seed)
            retrained[f"{name}/{order}"] = test_accuracy(model, transform(d.x_test), d.y_test)

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.6))
    for name, accuracies in shifted.items():
        left.plot(shifts, [a * 100 for a in accuracies], marker="o", label=name.upper())
    left.set(
        title="Saved models on shifted test digits", xlabel="shift right and down (pixels)", ylabel="test accuracy (%)"
    )
    left.legend()
    left.grid(alpha=0.3)
    positions = np.arange(2)
    for offset, order in ((-0.2, "original"), (0.2, "shuffled")):
        values = [retrained[f"{name}/{order}"] * 100 for name in builders]
        middle.bar(positions + offset, values, width=0.4, label=f"{order} pixels")
        for pos, value in zip(positions + offset, values, strict=True):
            middle.annotate(f"{value:.1f}", (pos, value), ha="center", va="bottom", fontsize=9)
    middle.set(
        xticks=positions,
        xticklabels=["CNN", "Dense"],
        ylim=(80, 100),
        ylabel="test accuracy (%)",
        title=f"Retrained on {size:,} images, {epochs} epochs",
    )
    middle.legend(loc="lower right")
    right.imshow(np.hstack([d.x_test[0], scramble(d.x_test[:1])[0]]), cmap="gray")
    right.set(title="A digit, and the same pixels shuffled", xticks=[], yticks=[])
    figure.tight_layout()

    cnn_drop = retrained["cnn/original"] - retrained["cnn/shuffled"]
    dense_drop = retrained["dense/original"] - retrained["dense/shuffled"]
    lead = retrained["cnn/original"] - retrained["dense/original"]
    lab.report(
        "spatial",
        figure,
        {
            "shifts": shifts,
            "shifted_accuracy": shifted,
            "retrained_accuracy": retrained,
            "train_size": size,
            "epochs": epochs,
        },
        (
            f"Shifted by 3 pixels, the CNN keeps {shifted['cnn'][3]:.1%} and the dense net {shifted['dense'][3]:.1%} "
            f"(from {shifted['cnn'][0]:.1%} / {shifted['dense'][0]:.1%}).",
            f"Shuffling the pixels costs the dense net {dense_drop * 100:.1f} points of accuracy but the CNN "
            f"{cnn_drop * 100:.1f}: the CNN's lead of {lead * 100:.1f} points comes from spatial structure.",
        ),
    )
