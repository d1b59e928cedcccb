"""The networks as the training scripts define them, and self-contained models that take raw pixels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import moved
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
    """The README's numbers, exactly: 35,338 for the CNN, 669,706 for the dense network (a nineteenth)."""
    cnn, dense = train_cnn.build_model().count_params(), train_dense.build_model().count_params()
    # 5·5·1·32+32 + 3·3·32·64+64 + 1600·10+10; and 784·512+512 + 512·512+512 + 512·10+10
    assert (cnn, dense) == (35_338, 669_706)
    assert round(dense / cnn) == 19
    assert train_cnn.build_model(augment=True).count_params() == cnn  # moving digits learns nothing itself


def test_best_cnn_keeps_the_conv_relu_pool_dropout_dense_idea():
    names = kinds(train_cnn.build_best_model())
    for kind in ("Conv2D", "ReLU", "MaxPooling2D", "Dropout", "Dense"):
        assert kind in names
    assert "BatchNormalization" not in names  # left out on purpose: unfused in Keras 3, it tripled the step time
    assert names.index("Conv2D") < names.index("MaxPooling2D") < names.index("Flatten") < names.index("Dense")


def test_best_cnn_is_the_lean_network_of_150602_parameters():
    """What --preset best trains, and build_model() is not: Conv 5×5/32 → pool → two Conv 3×3/64 ("same") → pool →
    dropout 0.25 → Conv 3×3/128 → flatten → dropout 0.5 → the ten probabilities; 150,602 parameters."""
    model = train_cnn.build_best_model(augment=False)
    assert kinds(model) == [
        "InputLayer", "Rescaling",
        "Conv2D", "ReLU", "MaxPooling2D",
        "Conv2D", "ReLU", "Conv2D", "ReLU", "MaxPooling2D", "Dropout",
        "Conv2D", "ReLU", "Flatten", "Dropout", "Dense",
    ]  # fmt: skip
    convolutions = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.padding) for c in convolutions] == [
        (32, (5, 5), "valid"),
        (64, (3, 3), "same"),
        (64, (3, 3), "same"),
        (128, (3, 3), "valid"),
    ]
    assert [layer.output.shape[1:] for layer in convolutions] == [(24, 24, 32), (12, 12, 64), (12, 12, 64), (4, 4, 128)]
    assert model.get_layer("flatten").output.shape[1:] == (4 * 4 * 128,)
    assert [layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)] == [0.25, 0.5]
    # 5·5·1·32+32 + 3·3·32·64+64 + 3·3·64·64+64 + 3·3·64·128+128 + 2048·10+10
    assert model.count_params() == 150_602
    with_augmentation = train_cnn.build_best_model()
    assert "augmentation" in [layer.name for layer in with_augmentation.layers]  # the preset's default
    assert with_augmentation.count_params() == 150_602  # moving digits learns nothing itself


def test_shifted_views_average_the_network_over_five_moved_digits():
    """with_shifted_views(): the answer is the mean of the network's answers to the digit as given and moved one
    pixel up, down, left and right; same weights, nothing learned; standard layers only (safe mode loads it)."""
    network = train_cnn.build_best_model(augment=False)
    network.compile(loss="categorical_crossentropy")
    views = train_cnn.with_shifted_views(network)
    assert views.count_params() == network.count_params() == 150_602
    assert sorted(train_cnn.SHIFTS) == [(-1, 0), (0, -1), (0, 0), (0, 1), (1, 0)]
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.float32)
    pixels[:, :, :3] = 0  # a dark border, as digits have
    expected = np.mean([np.asarray(network(moved(pixels, r, c))) for r, c in train_cnn.SHIFTS], axis=0)
    np.testing.assert_allclose(np.asarray(views(pixels)), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(views(pixels)), np.asarray(network(pixels)), atol=1e-4)  # not the centre alone
    up = moved(pixels, 1, 0)  # the shift's direction: one pixel up is what the (1, 0) view sees
    np.testing.assert_array_equal(up[:, :27], pixels[:, 1:])
    assert {type(layer).__module__.split(".")[0] for layer in views.layers} == {"keras"}


def test_the_toolbox_finds_the_network_inside_a_model_of_shifted_views():
    """The live page's first-layer kernels and feature maps come from the network the views average."""
    from mnistlab import explain, inference

    network = train_cnn.build_best_model(augment=False)
    network.compile(loss="categorical_crossentropy")
    views = train_cnn.with_shifted_views(network)
    assert inference.network_inside(views) is network and inference.network_inside(network) is network
    conv, kernels = inference.first_conv_kernels(views)
    assert conv.name == "conv1" and kernels.shape == (32, 5, 5)
    assert [layer.name for layer in inference.feature_map_layers(views)][:3] == ["relu1", "pool1", "relu2_1"]
    explainer = explain.Explainer()
    explainer.update("cnn", views)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = 255
    answer = explainer.explain(digit)
    expected = np.asarray(views(digit[None, :, :, None].astype(np.float32)))[0]
    np.testing.assert_allclose(answer["cnn"]["probabilities"], expected / expected.sum(), atol=1e-5)
    assert answer["feature_maps"][0]["layer"] == "relu1" and answer["feature_maps"][0]["shape"][:2] == [24, 24]


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
