"""Six small experiments that make the ideas behind CNNs visible. Each writes results/exp_<name>.png and
results/exp_<name>.json and prints a two-line conclusion with the measured numbers.

    python experiments.py spatial        # CNNs use spatial structure: shifted digits, shuffled pixels
    python experiments.py sharing        # parameter sharing and pooling: how few weights a conv layer needs
    python experiments.py stride         # feature-map size against stride and padding
    python experiments.py activations    # sigmoid / tanh / ReLU in a deep network: vanishing gradients
    python experiments.py dropout        # dropout: the overfitting gap, and off at inference
    python experiments.py augmentation   # rotated / zoomed / shifted digits help most when data is scarce
    python experiments.py all

Defaults take a few minutes each on 2 CPU cores (small slices, few epochs); --train-size and --epochs scale up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnistlab import cli

NAMES = ("spatial", "sharing", "stride", "activations", "dropout", "augmentation")


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument("name", choices=(*NAMES, "all"), help="which experiment to run")
    parser.add_argument(
        "--train-size",
        type=cli.positive_int,
        default=None,
        metavar="N",
        help="training images for experiments that train (default: each experiment's own)",
    )
    parser.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="epochs for experiments that train (default: each experiment's own)",
    )
    parser.add_argument("--seed", type=cli.non_negative_int, default=1, help="random seed (default: %(default)s)")
    cli.add_io_flags(parser)
    return parser.parse_args(argv)


class Lab:
    """What every experiment needs: the data, the output folder, the flags, and a way to report."""

    def __init__(self, args, dataset, results_dir: Path) -> None:
        self.args, self.data, self.results_dir = args, dataset, results_dir

    def size(self, default: int) -> int:
        return min(self.args.train_size or default, len(self.data.x_train) - 1000)

    def epochs(self, default: int) -> int:
        return self.args.epochs or default

    def slices(self, size: int):
        """The first ``size`` training images, and 1,000 held-out training images for validation."""
        d = self.data
        return (d.x_train[:size], d.y_train[:size]), (d.x_train[-1000:], d.y_train[-1000:])

    def report(self, name: str, figure, numbers: dict[str, Any], conclusion: tuple[str, str]) -> None:
        from mnistlab import plots, records  # noqa: PLC0415

        plots.save(figure, self.results_dir / f"exp_{name}.png")
        records.write_json(self.results_dir / f"exp_{name}.json", {**numbers, "conclusion": list(conclusion)})
        print(f"[{name}] {conclusion[0]}\n[{name}] {conclusion[1]}", flush=True)


def test_accuracy(model, images, labels) -> float:
    from mnistlab import training  # noqa: PLC0415

    return training.evaluate(model, images, labels)[1]


# ---------------------------------------------------------------------------------------------------------------
# 1. spatial — shifted test digits; pixels shuffled by one fixed permutation
# ---------------------------------------------------------------------------------------------------------------
def shift(images, pixels: int):
    """Move every image ``pixels`` to the right and down, filling with black (nothing wraps around)."""
    import numpy as np  # noqa: PLC0415

    out = np.zeros_like(images)
    out[:, pixels:, pixels:] = images[:, : images.shape[1] - pixels, : images.shape[2] - pixels]
    return out


def spatial(lab: Lab) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from mnistlab import inference, models, training  # noqa: PLC0415

    d = lab.data
    saved = inference.load_saved_models(lab.args.models_dir)
    shifts = list(range(7))
    shifted = {
        name: [test_accuracy(model, shift(d.x_test, s), d.y_test) for s in shifts] for name, model in saved.items()
    }

    size, epochs = lab.size(10000), lab.epochs(4)
    permutation = np.random.default_rng(lab.args.seed).permutation(28 * 28)
    scramble = lambda x: x.reshape(len(x), -1)[:, permutation].reshape(x.shape)  # noqa: E731
    (x, y), (xv, yv) = lab.slices(size)
    builders = {"cnn": models.build_cnn, "dense": models.build_dense}
    retrained = {}
    for name, build in builders.items():
        for order, transform in (("original", lambda a: a), ("shuffled", scramble)):
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


# ---------------------------------------------------------------------------------------------------------------
# 2. sharing — parameters of a conv layer vs a dense layer of the same output; pooling
# ---------------------------------------------------------------------------------------------------------------
def sharing(lab: Lab) -> None:
    import keras  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    from mnistlab import models  # noqa: PLC0415

    conv = layers.Conv2D(32, 3)
    conv.build((None, 28, 28, 1))
    outputs = 26 * 26 * 32  # what that conv layer produces
    dense = layers.Dense(outputs)
    dense.build((None, 28 * 28))
    inputs = keras.Input((28, 28, 1))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.ReLU()(layers.Conv2D(32, 5)(x))
    x = layers.ReLU()(layers.Conv2D(64, 3)(x))
    no_pool = keras.Model(inputs, layers.Dense(10)(layers.Dropout(0.25)(layers.Flatten()(x))))
    counts = {
        "Conv2D(32, 3×3)\n28×28 → 26×26×32": conv.count_params(),
        f"Dense({outputs:,})\n784 → 26×26×32": dense.count_params(),
        "CNN with pooling\n(train_cnn.py)": models.build_cnn().count_params(),
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


# ---------------------------------------------------------------------------------------------------------------
# 3. stride — output size of real Conv2D layers for stride 1..4 and padding valid/same
# ---------------------------------------------------------------------------------------------------------------
def stride(lab: Lab) -> None:
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

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


# ---------------------------------------------------------------------------------------------------------------
# 4. activations — vanishing gradients in a deep dense network
# ---------------------------------------------------------------------------------------------------------------
def deep_dense(activation: str, depth: int = 10, width: int = 64):
    import keras  # noqa: PLC0415
    from keras import layers  # noqa: PLC0415

    inputs = keras.Input((28, 28, 1))
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for index in range(depth):
        x = layers.Dense(width, activation=activation, name=f"hidden{index + 1}")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", dtype="float32")(x), name=f"deep_{activation}")


def gradient_norms(model, images, labels) -> list[float]:
    """L2 norm of the loss gradient for each hidden layer's kernel, first layer first."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    kernels = [layer.kernel for layer in model.layers if layer.name.startswith("hidden")]
    with tf.GradientTape() as tape:
        probabilities = model(images.astype(np.float32)[..., None], training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    return [float(tf.norm(tf.cast(g, tf.float32))) for g in tape.gradient(loss, kernels)]


def activations(lab: Lab) -> None:
    import keras  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from mnistlab import training  # noqa: PLC0415

    size, epochs = lab.size(10000), lab.epochs(5)
    (x, y), (xv, yv) = lab.slices(size)
    batch = (x[:256], y[:256])
    results = {}
    for activation in ("sigmoid", "tanh", "relu"):
        keras.utils.set_random_seed(lab.args.seed)
        model = deep_dense(activation)
        at_init = gradient_norms(model, *batch)
        history = training.quick_fit(model, (x, y), (xv, yv), epochs=epochs, learning_rate=1e-3, seed=lab.args.seed)
        results[activation] = {
            "gradient_norms_at_init": at_init,
            "gradient_norms_after_training": gradient_norms(model, *batch),
            "val_accuracy": history["val_accuracy"],
        }
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.6))
    for activation, result in results.items():
        layers_ = range(1, len(result["gradient_norms_at_init"]) + 1)
        left.semilogy(layers_, result["gradient_norms_at_init"], marker="o", label=activation)
        middle.semilogy(layers_, result["gradient_norms_after_training"], marker="o", label=activation)
        right.plot(range(1, epochs + 1), [a * 100 for a in result["val_accuracy"]], marker="o", label=activation)
    left.set(title="Gradient norm per layer, at initialisation", xlabel="hidden layer (1 = nearest the input)")
    middle.set(title=f"... after {epochs} epochs", xlabel="hidden layer")
    right.set(title="Validation accuracy", xlabel="epoch", ylabel="%")
    for axis in (left, middle, right):
        axis.grid(alpha=0.3, which="both")
        axis.legend()
    figure.tight_layout()
    ratio = {a: r["gradient_norms_at_init"][0] / r["gradient_norms_at_init"][-1] for a, r in results.items()}
    lab.report(
        "activations",
        figure,
        {"depth": 10, "train_size": size, "epochs": epochs, "results": results},
        (
            f"At initialisation the first hidden layer's gradient is {ratio['sigmoid']:.1e} times the last one's "
            f"with sigmoid, {ratio['tanh']:.2f} times with tanh, {ratio['relu']:.2f} times with ReLU.",
            f"After {epochs} epochs: sigmoid {results['sigmoid']['val_accuracy'][-1]:.1%}, tanh "
            f"{results['tanh']['val_accuracy'][-1]:.1%}, ReLU {results['relu']['val_accuracy'][-1]:.1%} validation "
            "accuracy — vanishing gradients starve the early layers.",
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# 5. dropout — the overfitting gap, and dropout off at inference
# ---------------------------------------------------------------------------------------------------------------
def dropout(lab: Lab) -> None:
    import keras  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from mnistlab import models, training  # noqa: PLC0415

    size, epochs = lab.size(2000), lab.epochs(40)
    (x, y), (xv, yv) = lab.slices(size)
    histories = {}
    for rate in (0.0, 0.5):
        keras.utils.set_random_seed(lab.args.seed)
        model = models.build_dense(dropout=rate)
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


# ---------------------------------------------------------------------------------------------------------------
# 6. augmentation — random rotation / zoom / shift, with little data
# ---------------------------------------------------------------------------------------------------------------
def augmentation(lab: Lab) -> None:
    import keras  # noqa: PLC0415
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from mnistlab import models, training  # noqa: PLC0415

    keras.utils.set_random_seed(lab.args.seed)
    augment = models.augmentation()
    originals = lab.data.x_train[:6].astype(np.float32)[..., None] / 255
    samples = [np.asarray(augment(originals, training=True))[..., 0] for _ in range(5)]
    sizes = [s for s in (500, 1000, 5000) if s <= lab.size(5000)] or [lab.size(5000)]
    accuracy: dict[str, dict[str, float]] = {"plain": {}, "augmented": {}}
    for size in sizes:
        (x, y), (xv, yv) = lab.slices(size)
        epochs = lab.epochs(max(8, 40_000 // size))  # a similar number of steps for every size
        for kind, by_size in accuracy.items():
            keras.utils.set_random_seed(lab.args.seed)
            model = models.build_cnn(augment=kind == "augmented")
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


EXPERIMENTS: dict[str, Callable[[Lab], None]] = {
    "spatial": spatial,
    "sharing": sharing,
    "stride": stride,
    "activations": activations,
    "dropout": dropout,
    "augmentation": augmentation,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    import keras  # noqa: PLC0415

    from mnistlab import data  # noqa: PLC0415

    keras.utils.set_random_seed(args.seed)
    lab = Lab(args, data.load(args.data), results_dir)
    for name in NAMES if args.name == "all" else (args.name,):
        EXPERIMENTS[name](lab)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
