"""predict.py on real digits written as image files, and the MNIST-style preparation it shares with the live page."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
from conftest import assert_one_line_error, run_script
from PIL import Image, ImageDraw

from mnistlab import images


def digit_png(path, digit: np.ndarray, size: int = 280, invert: bool = True, colour: bool = False):
    """An MNIST test digit as a large PNG, dark ink on light paper (like a scan of a drawing)."""
    picture = Image.fromarray(255 - digit if invert else digit).resize((size, size), Image.Resampling.BICUBIC)
    if colour:
        picture = Image.merge("RGB", (picture, picture, picture.point(lambda v: min(255, v + 30))))
    picture.save(path)
    return path


def io_flags(trained, results):
    return ["--models-dir", str(trained["models"]), "--results-dir", str(results)]


def assert_drawn(figure_path) -> None:
    """The figure predict.py saves is drawn, not blank paper: the input panel (a white digit on black) and both
    networks' bars (blue: the CNN, orange: the dense network)."""
    with Image.open(figure_path) as figure:
        assert figure.width > 600, figure.size
        rgb = np.asarray(figure.convert("RGB"), dtype=int)
    grey, spread = rgb.mean(axis=2), rgb.max(axis=2) - rgb.min(axis=2)
    assert grey.std() > 40, grey.std()  # not blank paper
    assert (grey < 60).mean() > 0.05, (grey < 60).mean()  # the input panel: a white digit on black
    blue = (spread > 80) & (rgb[..., 2] > rgb[..., 0])  # the CNN's bars
    orange = (spread > 80) & (rgb[..., 0] > rgb[..., 2])  # the dense network's
    assert blue.mean() > 0.003 and orange.mean() > 0.003, (blue.mean(), orange.mean())


# --- images.py: MNIST-style preprocessing -----------------------------------------------------------------------
def test_preprocessing_recovers_mnist_geometry(tmp_path, mnist):
    """A test digit blown up 10×, inverted and re-prepared lands where MNIST put it."""
    original = mnist.x_test[3]
    prepared = images.load_digit(digit_png(tmp_path / "d.png", original))
    assert prepared.shape == (28, 28) and prepared.dtype == np.uint8
    ys, xs = np.nonzero(prepared > 50)
    assert ys.min() >= 3 and ys.max() <= 24 and xs.min() >= 3 and xs.max() <= 24  # inside the 20×20 box + margin
    mass = prepared.astype(float)
    centre = (np.indices(mass.shape) * mass).sum(axis=(1, 2)) / mass.sum()
    assert np.allclose(centre, 13.5, atol=1.0)
    assert np.corrcoef(prepared.ravel(), original.ravel())[0, 1] > 0.6


def test_light_on_dark_and_colour_give_the_same_digit(tmp_path, mnist):
    dark_on_light = images.load_digit(digit_png(tmp_path / "a.png", mnist.x_test[5]))
    light_on_dark = images.load_digit(digit_png(tmp_path / "b.png", mnist.x_test[5], invert=False))
    colour = images.load_digit(digit_png(tmp_path / "c.jpg", mnist.x_test[5], colour=True))
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).mean() < 8
    assert np.abs(dark_on_light.astype(int) - colour.astype(int)).mean() < 20


# --- predict.py ------------------------------------------------------------------------------------------------
def test_predict_recovers_labels_of_real_digits(trained, tmp_path, mnist):
    indices = range(12)
    files = [str(digit_png(tmp_path / f"digit{i}.png", mnist.x_test[i], size=200 + 10 * i)) for i in indices]
    result = run_script("predict.py", *files, "--json", *io_flags(trained, tmp_path / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [entry["file"] for entry in report] == files
    for name in ("cnn", "dense"):
        predicted = [entry["models"][name][0][0] for entry in report]
        correct = sum(p == mnist.y_test[i] for p, i in zip(predicted, indices, strict=True))
        assert correct >= 10, (name, predicted, mnist.y_test[:12].tolist())
        for entry in report:
            top = entry["models"][name]
            assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1] and 0 <= top[2][1] <= 1


def test_predict_human_output_and_figure(trained, tmp_path, mnist):
    """The readable output names, for each network, the three digits and probabilities that the saved model itself
    computes for the prepared image (a wrong label or probability fails), and --show saves a figure that is drawn."""
    file = digit_png(tmp_path / "seven.png", mnist.x_test[0])
    results = tmp_path / "results"
    result = run_script("predict.py", str(file), "--show", *io_flags(trained, results))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == str(file) and lines[-1] == f"  figure: {results / 'predict_seven.png'}", lines
    printed = {}
    for line in lines[1:-1]:
        name, ranked = line.split(None, 1)
        printed[name] = [(int(label), float(percent)) for label, percent in re.findall(r"(\d) \((\d+\.\d)%\)", ranked)]
    assert set(printed) == {"cnn", "dense"}, lines

    digit = images.load_digit(file)  # what predict.py prepares, given to each saved model here
    for name, top in printed.items():
        model = keras.saving.load_model(trained["models"] / f"{name}.keras", safe_mode=True)
        probabilities = np.asarray(model(digit[None, :, :, None].astype(np.float32), training=False))[0]
        expected = probabilities.argsort()[::-1][:3]
        assert [label for label, _ in top] == expected.tolist(), (name, top, probabilities.round(4))
        for label, percent in top:
            assert abs(percent - 100 * probabilities[label]) <= 0.06, (name, label, percent, probabilities[label])
        assert top[0][0] == mnist.y_test[0] == 7, (name, top)  # test digit 0 is a clear 7
    assert_drawn(results / "predict_seven.png")


def drawn_seven(path):
    """A 7 drawn as with a thick pen: two black strokes on white paper (not an MNIST image), 200×260."""
    picture = Image.new("L", (200, 260), 255)
    ImageDraw.Draw(picture).line([(40, 50), (160, 45), (85, 225)], fill=0, width=18, joint="curve")
    picture.save(path)
    return path


def test_predict_reads_a_drawn_seven_and_its_figure_shows_it(trained, tmp_path):
    seven = drawn_seven(tmp_path / "seven.png")
    result = run_script("predict.py", str(seven), "--json", "--show", *io_flags(trained, tmp_path / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    [entry] = json.loads(result.stdout)
    assert {name: top[0][0] for name, top in entry["models"].items()} == {"cnn": 7, "dense": 7}, entry
    assert entry["figure"] == str(tmp_path / "results" / "predict_seven.png")
    assert_drawn(entry["figure"])


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p / "absent.png", "no such file"),
        (lambda p: (p / "notes.png").write_text("not an image") and p / "notes.png", "not an image"),
        (lambda p: (p / "empty.png").write_bytes(b"") or p / "empty.png", "the file is empty"),
        (lambda p: Image.new("L", (60, 60), 255).save(p / "blank.png") or p / "blank.png", "no digit found"),
        (lambda p: Image.new("1", (8000, 6000)).save(p / "huge.png") or p / "huge.png", "too large"),
    ],
    ids=["missing", "not-image", "empty-file", "blank-image", "huge-image"],
)
def test_predict_bad_images(trained, tmp_path, make, fragment):
    path = make(tmp_path)
    result = run_script("predict.py", str(path), *io_flags(trained, tmp_path / "results"))
    assert_one_line_error(result, 1, fragment)


def test_predict_without_models(tmp_path, mnist):
    file = digit_png(tmp_path / "d.png", mnist.x_test[0])
    result = run_script("predict.py", str(file), "--models-dir", str(tmp_path))
    assert_one_line_error(result, 1, "cnn.keras not found", "python train_cnn.py")
