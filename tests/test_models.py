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


def test_best_cnn_has_two_3x3_convolutions_per_block_and_a_dense_layer_of_256():
    """What --preset best trains, and build_model() is not: blocks of conv-relu-conv-relu-pool-dropout (32 then 64
    filters of 3×3, "same" padding: 28 → 14 → 7), dense 256, dropout 0.5; 870,634 parameters."""
    model = train_cnn.build_best_model(augment=False)
    block = ["Conv2D", "ReLU", "Conv2D", "ReLU", "MaxPooling2D", "Dropout"]
    tail = ["Flatten", "Dense", "ReLU", "Dropout", "Dense"]
    assert kinds(model) == ["InputLayer", "Rescaling", *block, *block, *tail]
    convolutions = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (3, 3), "same"),
        (32, (3, 3), "same"),
        (64, (3, 3), "same"),
        (64, (3, 3), "same"),
    ]
    assert model.get_layer("flatten").output.shape[1:] == (7 * 7 * 64,)
    assert model.get_layer("dense").units == 256 and model.get_layer("dropout").rate == 0.5
    # 3·3·1·32+32 + 3·3·32·32+32 + 3·3·32·64+64 + 3·3·64·64+64 + 3136·256+256 + 256·10+10
    assert model.count_params() == 870_634
    with_augmentation = train_cnn.build_best_model()
    assert "augmentation" in [layer.name for layer in with_augmentation.layers]  # the preset's default
    assert with_augmentation.count_params() == 870_634  # moving digits learns nothing itself


def test_augmentation_only_changes_images_in_training():
    model = train_cnn.build_model(augment=True)
    augment = model.get_layer("augmentation")
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 10:18, 12:16] = 1.0
    np.testing.assert_array_equal(np.asarray(augment(image, training=False)), image)
    assert not np.allclose(np.asarray(augment(np.repeat(image, 8, 0), training=True)), np.repeat(image, 8, 0))


@pytest.mark.parametrize("script", [train_cnn, train_dense], ids=["cnn", "dense"])
def test_models_take_raw_pixels_with_or_without_channel_axis(script):
    """(N, 28, 28) and (N, 28, 28, 1) give the same probabilities, and the 0-255 to 0-1 scaling is the model's own
    first layer: the same pixels scaled beforehand give other probabilities."""
    model = script.build_model()
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.float32)
    flat, channel = np.asarray(model(pixels)), np.asarray(model(pixels[..., None]))
    assert flat.shape == (3, 10)
    np.testing.assert_allclose(flat.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(flat, channel)
    rescale = model.layers[1]
    assert isinstance(rescale, layers.Rescaling) and rescale.scale == pytest.approx(1 / 255)
    after_rescale = model.get_layer(index=2).input  # the network from the layer after the scaling on
    inner = type(model)(after_rescale, model.output)
    np.testing.assert_allclose(np.asarray(inner(pixels[..., None] / 255)), channel, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(model(pixels[..., None] / 255)), channel, atol=1e-3)
