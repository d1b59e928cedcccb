"""Vanishing gradients: a 10-layer dense network with sigmoid, tanh and ReLU; the gradient that reaches each
layer, and how fast each learns.

    python experiments.py activations
"""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from keras import layers

from lab import Lab
from mnistlab import training


def deep_dense(activation: str, depth: int = 10, width: int = 64) -> keras.Model:
    """A deep, narrow dense network: deep enough for the activation function to decide whether it learns."""
    inputs = keras.Input((28, 28, 1))
    x = layers.Flatten()(layers.Rescaling(1 / 255)(inputs))
    for index in range(depth):
        x = layers.Dense(width, activation=activation, name=f"hidden{index + 1}")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", dtype="float32")(x), name=f"deep_{activation}")


def gradient_norms(model, images, labels) -> list[float]:
    """L2 norm of the loss gradient for each hidden layer's kernel, first layer first."""
    kernels = [layer.kernel for layer in model.layers if layer.name.startswith("hidden")]
    with tf.GradientTape() as tape:
        probabilities = model(images.astype(np.float32)[..., None], training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    return [float(tf.norm(tf.cast(g, tf.float32))) for g in tape.gradient(loss, kernels)]


def run(lab: Lab) -> None:
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
