"""The networks as the training scripts define them, and self-contained models that take raw pixels."""

from __future__ import annotations

import numpy as np
import pytest
from keras import layers

import train_cnn
import train_dense


def kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_cnn_layer_order():
    assert kinds(train_cnn.build_model()) == [
        "InputLayer",
        "Rescaling",
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Conv2D",
        "ReLU",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Dense",
    ]


def test_dense_has_dropout_half_between_dense_layers():
    model = train_dense.build_model()
    assert kinds(model) == ["InputLayer", "Rescaling", "Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert all(layer.rate == 0.5 for layer in model.layers if isinstance(layer, layers.Dropout))
    assert not any(isinstance(layer, layers.Conv2D) for layer in model.layers)


def test_cnn_has_far_fewer_parameters_than_dense():
    assert train_cnn.build_model().count_params() * 10 < train_dense.build_model().count_params()


def test_best_cnn_keeps_the_conv_relu_pool_dropout_dense_idea():
    names = kinds(train_cnn.build_best_model())
    for kind in ("Conv2D", "ReLU", "MaxPooling2D", "Dropout", "Dense"):
        assert kind in names
    assert "BatchNormalization" not in names  # left out on purpose: unfused in Keras 3, it tripled the step time
    assert names.index("Conv2D") < names.index("MaxPooling2D") < names.index("Flatten") < names.index("Dense")


def test_augmentation_only_changes_images_in_training():
    model = train_cnn.build_model(augment=True)
    augment = model.get_layer("augmentation")
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 10:18, 12:16] = 1.0
    np.testing.assert_array_equal(np.asarray(augment(image, training=False)), image)
    assert not np.allclose(np.asarray(augment(np.repeat(image, 8, 0), training=True)), np.repeat(image, 8, 0))


@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 28, 28, 1)])
def test_models_take_raw_pixels_with_or_without_channel_axis(shape):
    model = train_cnn.build_model()
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    probabilities = np.asarray(model(pixels.astype(np.float32)))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
