"""What both networks make of one digit: their probabilities, the CNN's feature maps, which pixels each answer
depends on (gradient saliency), and their answers when the digit is shifted without being recentred.

Used by serve.py's page. Each model gets one compiled function that returns its probabilities, its feature maps
and its input gradient in a single pass over a batch of the digit and its shifted copies.
"""

from __future__ import annotations

import threading
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnistlab.data import INPUT_SHAPE
from mnistlab.images import shift
from mnistlab.inference import feature_map_layers, network_inside

SHIFTS = tuple(range(7))  # pixels right and down; 0 is the digit as the networks normally see it
FEATURE_MAPS = 3  # the first three ReLU / pooling outputs: after conv1, after pooling, after conv2
CHANNELS_SHOWN = 8  # feature maps per layer sent to the page


class Explainer:
    """:meth:`explain` any number of digits with the networks it holds (thread-safe: one digit at a time;
    LookupError when it holds none). The networks can change while it serves (:meth:`update`: training moved on);
    each gets its compiled function when it is first asked."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[keras.Model, dict[str, Any] | None]] = {}
        self.analyse: dict[str, Any] = {}
        self.lock = threading.Lock()  # two cores: requests take turns rather than fight over them

    def update(self, name: str, model: keras.Model | None, about: dict[str, Any] | None = None) -> None:
        """Answer with ``model`` from now on (``None``: no answer for ``name``); ``about`` goes with its answers."""
        with self.lock:
            self.models.pop(name, None)
            self.analyse.pop(name, None)
            if model is not None:
                self.models[name] = (model, about)

    def explain(self, digit: np.ndarray) -> dict[str, Any]:
        """``digit``: 28×28 uint8, white on black, as the networks take it. Returns plain JSON-able data."""
        batch = np.stack([shift(digit[None], pixels)[0] for pixels in SHIFTS]).astype(np.float32)[..., None]
        with self.lock:
            if not self.models:
                raise LookupError("no network to answer with")
            for name, (model, _) in self.models.items():
                if name not in self.analyse:
                    self.analyse[name] = analyser(model, FEATURE_MAPS if name == "cnn" else 0)
            outputs = {name: analyse(batch) for name, analyse in self.analyse.items()}
            about = {name: info for name, (_, info) in self.models.items()}
        answer: dict[str, Any] = {"preprocessed": digit.astype(int).tolist(), "shifted": []}
        for name, (probabilities, gradient, maps) in outputs.items():
            first = probabilities.numpy()[0].astype(np.float64)
            first /= first.sum()  # a float32 softmax sums to 1 ± 1e-7
            answer[name] = {
                "probabilities": [round(float(p), 6) for p in first],
                "label": int(first.argmax()),
                "saliency": normalised(np.abs(gradient.numpy()[0, :, :, 0])),
                "model": about[name],
            }
            if maps:
                answer["feature_maps"] = [
                    {
                        "layer": layer,
                        "shape": list(values.shape[1:]),
                        "channels": [normalised(values.numpy()[0, :, :, c]) for c in range(CHANNELS_SHOWN)],
                    }
                    for layer, values in maps.items()
                ]
        for index, pixels in enumerate(SHIFTS):
            row: dict[str, Any] = {"shift": pixels}
            for name, (probabilities, _, _) in outputs.items():
                values = probabilities.numpy()[index]
                row[name] = {"label": int(values.argmax()), "confidence": round(float(values.max()), 4)}
            answer["shifted"].append(row)
        return answer


def analyser(model: keras.Model, feature_maps: int):
    """A compiled ``images -> (probabilities, d top-probability / d pixels, {layer: feature maps})``."""
    wanted = feature_map_layers(model)[:feature_maps]
    network = network_inside(model)  # the feature maps are its layers' (a model of shifted views holds it)
    probe = keras.Model(network.inputs, [layer.output for layer in wanted]) if wanted else None
    names = [layer.name for layer in wanted]

    @tf.function(input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)])
    def analyse(images: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch(images)
            probabilities = model(images, training=False)
            top = tf.reduce_max(tf.cast(probabilities, tf.float32), axis=1)
        maps = tf.nest.flatten(probe(images, training=False)) if probe else []  # one output comes unlisted
        return probabilities, tape.gradient(top, images), dict(zip(names, maps, strict=True))

    return analyse


def normalised(values: np.ndarray) -> list[list[float]]:
    """Scale to 0–1 by the largest value (all zeros stay zeros), rounded for a compact JSON answer."""
    values = np.asarray(values, dtype=np.float64)
    peak = float(values.max())
    scaled = values / peak if peak > 0 else np.zeros_like(values)
    return np.round(scaled, 3).tolist()
