"""The learning lab: predict.py on real digits written as image files, visualize.py, experiments.py, report.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import keras
import numpy as np
import pytest
from conftest import (
    CHROMIUM_FLAGS,
    ROOT,
    assert_one_line_error,
    data_flags,
    find_chromium,
    first_images,
    run_script,
)
from PIL import Image, ImageDraw

from mnistlab import images


def digit_png(path, digit: np.ndarray, size: int = 280, invert: bool = True, colour: bool = False):
    """An MNIST test digit as a large PNG, dark ink on light paper (like a scan of a drawing)."""
    picture = Image.fromarray(255 - digit if invert else digit).resize((size, size), Image.Resampling.BICUBIC)
    if colour:
        picture = Image.merge("RGB", (picture, picture, picture.point(lambda v: min(255, v + 30))))
    picture.save(path)
    return path


@pytest.fixture(scope="module")
def lab_results(trained, tmp_path_factory):
    """A results dir seeded with the trained runs, for the scripts here to write into."""
    results = tmp_path_factory.mktemp("lab")
    for path in trained["results"].iterdir():
        shutil.copy(path, results)
    return results


def io_flags(trained, results):
    return ["--models-dir", str(trained["models"]), "--results-dir", str(results)]


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
def test_predict_recovers_labels_of_real_digits(trained, lab_results, tmp_path, mnist):
    indices = range(12)
    files = [str(digit_png(tmp_path / f"digit{i}.png", mnist.x_test[i], size=200 + 10 * i)) for i in indices]
    result = run_script("predict.py", *files, "--json", *io_flags(trained, lab_results))
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


def test_predict_human_output_and_figure(trained, lab_results, tmp_path, mnist):
    file = digit_png(tmp_path / "seven.png", mnist.x_test[0])
    result = run_script("predict.py", str(file), "--show", *io_flags(trained, lab_results))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cnn" in result.stdout and "dense" in result.stdout and "%" in result.stdout
    with Image.open(lab_results / "predict_seven.png") as figure:
        assert figure.width > 600


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
    with Image.open(entry["figure"]) as figure:
        rgb = np.asarray(figure.convert("RGB"), dtype=int)
    grey, spread = rgb.mean(axis=2), rgb.max(axis=2) - rgb.min(axis=2)
    assert grey.std() > 40, grey.std()  # not blank paper
    assert (grey < 60).mean() > 0.05, (grey < 60).mean()  # the input panel: a white digit on black
    blue = (spread > 80) & (rgb[..., 2] > rgb[..., 0])  # the CNN's bars
    orange = (spread > 80) & (rgb[..., 0] > rgb[..., 2])  # the dense network's
    assert blue.mean() > 0.003 and orange.mean() > 0.003, (blue.mean(), orange.mean())


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


# --- visualize.py ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def visualized(trained, lab_results):
    """visualize.py run once into lab_results: its four figures, for the tests that read them."""
    result = run_script("visualize.py", *io_flags(trained, lab_results), *data_flags())
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_visualize(visualized, lab_results):
    result = visualized
    lines = [line for line in result.stdout.splitlines() if line.startswith(("Feature maps", "Errors on"))]
    assert len(lines) == 2
    numbers = json.loads((lab_results / "visualize.json").read_text())
    assert numbers["feature_map_shapes"] == {
        "relu1": [24, 24, 32],
        "pool1": [12, 12, 32],
        "relu2": [10, 10, 64],
        "pool2": [5, 5, 64],
    }
    for name in ("cnn", "dense"):
        matrix = np.array(numbers["confusion"][name])
        assert matrix.sum() == 10000 and matrix.sum() - np.trace(matrix) == numbers["errors"][name]
    for figure in ("kernels", "feature_maps", "confusion", "misclassified"):
        with Image.open(lab_results / f"{figure}.png") as image:
            assert image.width > 400
            pixels = np.asarray(image.convert("L"), dtype=float)
        height, width = pixels.shape  # the middle of the figure, where its panels are: drawn, not blank paper
        middle = pixels[height // 5 : height * 4 // 5, width // 5 : width * 4 // 5]
        assert middle.std() > 20 and len(np.unique(middle)) > 20, (figure, middle.std(), len(np.unique(middle)))


# --- experiments.py --------------------------------------------------------------------------------------------
def run_experiment(trained, results, name, *flags):
    result = run_script("experiments.py", name, *flags, *io_flags(trained, results), *data_flags())
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"[{name}]")]
    assert len(lines) == 2, result.stdout
    assert (results / f"exp_{name}.png").is_file()
    return json.loads((results / f"exp_{name}.json").read_text())


EXPERIMENTS = ("spatial", "sharing", "stride", "activations", "dropout", "augmentation")  # `all`, in this order


@pytest.fixture(scope="module")
def all_experiments(trained, mnist, tmp_path_factory):
    """`experiments.py all` (what make lab runs), once, at its smallest real size: 200 training images, 1 epoch,
    500 test images. The experiments that do not train (sharing, stride) take their numbers from this run."""
    folder = tmp_path_factory.mktemp("all")
    data = folder / "mnist-tiny.npz"
    np.savez(data, **first_images(mnist, 1200, 500))  # 1,000 of the training images: the lab's validation slice
    flags = ["--train-size", "200", "--epochs", "1", "--data", str(data)]
    result = run_script("experiments.py", "all", *flags, *io_flags(trained, folder / "results"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"stdout": result.stdout, "results": folder / "results"}


def test_experiments_all_runs_each_experiment_in_one_process(all_experiments):
    lines = [line for line in all_experiments["stdout"].splitlines() if line.startswith("[")]
    assert [line[1 : line.index("]")] for line in lines] == [name for name in EXPERIMENTS for _ in range(2)], lines
    for name in EXPERIMENTS:
        numbers = json.loads((all_experiments["results"] / f"exp_{name}.json").read_text())
        printed = [line for line in lines if line.startswith(f"[{name}]")]
        assert [f"[{name}] {line}" for line in numbers["conclusion"]] == printed, (numbers["conclusion"], printed)
        with Image.open(all_experiments["results"] / f"exp_{name}.png") as figure:
            assert figure.width > 400, name


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_runs_experiments_all():
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), "lab", "DATA=data/mnist.npz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout.splitlines()
    assert any(line.endswith("python experiments.py all --data data/mnist.npz") for line in commands), commands


def test_experiment_sharing(all_experiments):
    numbers = json.loads((all_experiments["results"] / "exp_sharing.json").read_text())["parameters"]
    values = list(numbers.values())
    assert values[0] == 32 * 9 + 32  # a 3×3 conv layer: 320 weights, wherever it looks
    assert values[1] == 784 * 26 * 26 * 32 + 26 * 26 * 32
    assert values[2] < values[3]  # pooling shrinks the classifier


def test_experiment_stride(all_experiments):
    sizes = json.loads((all_experiments["results"] / "exp_stride.json").read_text())["output_sizes"]
    assert sizes["valid"] == {"1": [26, 26], "2": [13, 13], "3": [9, 9], "4": [7, 7]}
    assert sizes["same"] == {"1": [28, 28], "2": [14, 14], "3": [10, 10], "4": [7, 7]}


def test_experiment_spatial(trained, lab_results):
    numbers = run_experiment(trained, lab_results, "spatial", "--train-size", "3000", "--epochs", "3")
    shifted = numbers["shifted_accuracy"]
    assert shifted["cnn"][0] > shifted["cnn"][6] and shifted["cnn"][3] > shifted["dense"][3]
    retrained = numbers["retrained_accuracy"]
    cnn_loss = retrained["cnn/original"] - retrained["cnn/shuffled"]
    dense_loss = retrained["dense/original"] - retrained["dense/shuffled"]
    assert abs(dense_loss) < 0.02  # a dense layer does not care about pixel order
    assert cnn_loss > dense_loss + 0.02  # the CNN does


def test_experiment_activations(trained, lab_results):
    results = run_experiment(trained, lab_results, "activations", "--train-size", "3000", "--epochs", "2")["results"]
    sigmoid, relu = results["sigmoid"]["gradient_norms_at_init"], results["relu"]["gradient_norms_at_init"]
    assert sigmoid[0] / sigmoid[-1] < 0.01  # vanishing: the first layer gets almost nothing
    assert relu[0] / relu[-1] > 10 * sigmoid[0] / sigmoid[-1]
    assert results["relu"]["val_accuracy"][-1] > results["sigmoid"]["val_accuracy"][-1]


def test_experiment_dropout(trained, lab_results):
    numbers = run_experiment(trained, lab_results, "dropout", "--train-size", "1000", "--epochs", "25")
    assert numbers["inference_is_deterministic"] is True and numbers["training_mode_is_random"] is True
    assert numbers["gap"]["0.0"] > numbers["gap"]["0.5"]


def test_experiment_augmentation(trained, lab_results):
    numbers = run_experiment(trained, lab_results, "augmentation", "--train-size", "500", "--epochs", "15")
    assert numbers["sizes"] == [500]
    assert numbers["test_accuracy"]["augmented"]["500"] > numbers["test_accuracy"]["plain"]["500"]


def test_train_script_augment_flag(tmp_path):
    result = run_script(
        "train_cnn.py",
        "--augment",
        "--train-size",
        "2000",
        "--epochs",
        "1",
        "--models-dir",
        str(tmp_path / "m"),
        "--results-dir",
        str(tmp_path / "r"),
        *data_flags(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "cnn_run.json").read_text())["augment"] is True
    model = keras.saving.load_model(tmp_path / "m" / "cnn.keras", safe_mode=True)  # the layer is in the saved model
    kinds = [type(layer).__name__ for layer in model.get_layer("augmentation").layers]
    assert kinds == ["RandomRotation", "RandomZoom", "RandomTranslation"], kinds
    assert [layer.name for layer in model.layers][:3] == ["pixels", "rescale", "augmentation"]


# --- report.py -------------------------------------------------------------------------------------------------
def test_report_lists_missing_figures(tmp_path):
    result = run_script("report.py", "--results-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report.html").read_text()
    assert "python compare.py" in page and "python visualize.py" in page and "<img" not in page


def test_report_in_a_real_browser(trained, lab_results, visualized, tmp_path):
    compare = run_script("compare.py", *io_flags(trained, lab_results), *data_flags())
    assert compare.returncode == 0, compare.stderr[-2000:]
    result = run_script("report.py", "--results-dir", str(lab_results))
    assert result.returncode == 0, result.stderr
    page = (lab_results / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "<table>" in page  # comparison + visualize's four
    assert "The CNN reaches" in page
    chromium, _ = find_chromium(driver=False)
    # Every image must decode in the browser: a script swaps the page for one line with the counts.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(
            "</body>",
            "<script>window.onload=()=>{const i=[...document.images];"
            "document.title='loaded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+"
            "' of '+i.length;document.body.innerHTML='<h1 id=r>'+document.title+'</h1>';};"
            "</script></body>",
        )
    )
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    count = page.count("data:image/png;base64,")
    assert f"loaded {count} of {count}" in dom.stdout, dom.stdout[-500:] + dom.stderr[-500:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600", (lab_results / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot is blank"
