"""The lesson notebook: lesson.py (its source, jupytext's percent format) and lesson.ipynb agree; the notebook runs top
to bottom in a real Jupyter kernel, copied alone into an empty folder with data/mnist.npz, starts quietly, survives
every cell that does not train being run a second time, draws something in every panel of every figure, and its key
numbers say what its sentences say; the HTML export that `make lab` writes (results/report.html) shows every figure in
a real headless Chromium.

The notebook runs once for the whole module (about five minutes on two quiet cores): every test here reads that run."""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import time

import jupytext
import keras
import nbformat
import numpy as np
import pytest
from conftest import CHROMIUM_FLAGS, ROOT, data_flags, find_chromium, mnist_npz, run_script
from nbclient import NotebookClient
from PIL import Image

import train_cnn
import train_dense

TYPED_RESULT = re.compile(r"\d+(\.\d+)? ?%|\d+ errors\b|\d+(\.\d+)? s\b")  # a percent, errors, seconds
ALLOWED = {"keras", "tensorflow", "numpy", "matplotlib"}  # and the standard library: as the training scripts
NOTEBOOK_TIMEOUT = 2400  # seconds for the whole module's run: about 5 minutes alone, slower beside other tests

# Margins for the numbers that compare trainings. The notebook trains with SEED = 1, and its dropout and augmentation
# cells with seeds SEED, SEED + 1 and SEED + 2. It was run whole with SEED = 1 and SEED = 3 (its own cells, the seed
# changed), so the dropout and augmentation margins rest on seeds 1-5 and the others on seeds 1 and 3. Each margin is
# about half the smallest difference measured, or less (in brackets: the range measured).
AGREEMENT_MARGIN = 0.2  # trained kernels' neighbour agreement minus the most agreeing of 200 random sets [0.480, 0.480]
GRADIENT_FACTOR = 1000  # ReLU's first-layer gradient per weight over sigmoid's, before training [22,756, 35,636]
HE_FACTOR = 10  # He's start over the default start: ReLU's first-layer gradient [31, 35], layer 10's signal [25, 35]
ACTIVATION_MARGIN = 0.5  # ReLU's validation accuracy (either start) minus sigmoid's after 5 epochs [0.825, 0.837]
POOL_MARGIN = 0.2  # test accuracy with a 2×2 pool minus a 24×24 pool [0.401, 0.515]
WHERE_MARGIN = 0.05  # an 8×8 pool minus a global pool of 288 maps: as many numbers, no where [0.104, 0.108]
COUNT_MARGIN = 0.12  # a global pool of 288 maps minus one of 32: no where either way, fewer numbers [0.251, 0.362]
DROPOUT_GAP_MARGIN = 0.02  # the overfitting gap without dropout minus with 0.5, each seed [0.041, 0.065], seeds 1-5
AUGMENT_MARGIN = 0.01  # augmented minus plain validation accuracy, 500 images, each seed [0.023, 0.032], seeds 1-5
DENSE_SHUFFLE_LIMIT = 0.01  # what shuffled pixels cost the dense network, at most [-0.0008, 0.0030]
SHUFFLE_MARGIN = 0.03  # what they cost the CNN beyond what they cost the dense network, at least [0.064, 0.068]
LEAD_MARGIN = 0.003  # the CNN's test accuracy minus the dense network's, full MNIST [0.0065, 0.0067]
SHIFT_MARGIN = 0.1  # the CNN minus the dense network, test digits moved 3 right and 3 down [0.238, 0.247]

# Run in the notebook's kernel before its first cell: at every plt.show(), the number of things drawn in each panel
# of the figure (images, lines, bars and other patches, collections such as scatter points and colour bars).
PRELUDE = """
import matplotlib.pyplot as _plt

_panel_artists = []
_original_show = _plt.show


def _show_and_count(*args, **kwargs):
    _panel_artists.append([len(a.images) + len(a.lines) + len(a.patches) + len(a.collections)
                           for a in _plt.gcf().axes if a.get_visible()])
    return _original_show(*args, **kwargs)


_plt.show = _show_and_count
"""

# Run in the notebook's kernel after its last cell: the numbers the tests check, as one line of JSON.
KEY_NUMBERS = """
import json as _json


def _layers(model):
    return [[type(layer).__name__, layer.get_config()] for layer in model.layers]


print("KEY-NUMBERS " + _json.dumps({
    "input_shape": list(INPUT_SHAPE),
    "conv_sizes": conv_sizes,
    "keras_sizes": keras_sizes,
    "formula_sizes": formula_sizes,
    "conv_max_difference": conv_max_difference,
    "settings": SETTINGS,
    "cnn_layers": _layers(build_cnn()),
    "dense_layers": _layers(build_dense()),
    "augmentation_layers": _layers(augmentation()),
    "one_cycle": {f"{peak}/{steps}": [float(one_cycle(peak, steps)(step)) for step in range(steps + 1)]
                  for peak, steps in ((6e-3, 705), (5e-3, 53), (1e-3, 7))},
    "parameters": {"cnn": cnn.count_params(), "dense": dense.count_params()},
    "sharing": list(parameters.values()),
    "depth_difference": depth_difference,
    "accuracy": accuracy,
    "errors": errors,
    "confusion": {name: matrix.tolist() for name, matrix in confusion.items()},
    "arithmetic": arithmetic,
    "feature_map_shapes": feature_map_shapes,
    "agreement": agreement,
    "random_agreement": random_agreement,
    "learn_error": learn_error,
    "learn_tolerance": TOLERANCE,
    "gradients": gradients,
    "signals": signals,
    "activation_accuracy": activation_accuracy,
    "pool_accuracy": pool_accuracy,
    "pool_features": pool_features,
    "pool_kept": pool_kept,
    "receptive_field": receptive_field,
    "dropout_layer_differ": bool(dropout_layer_differ),
    "dropout_training_differ": bool(dropout_training_differ),
    "dropout_inference_agree": bool(dropout_inference_agree),
    "dropout_gaps": gaps,
    "augment_runs": {kind: {f"{size}/{seed}": value for (size, seed), value in runs.items()}
                     for kind, runs in augment_runs.items()},
    "shifted_accuracy": shifted_accuracy,
    "retrained": {f"{name}/{order}": value for (name, order), value in retrained.items()},
    "section_seconds": section_seconds,
    "total_seconds": total_seconds,
    "panel_artists": globals().get("_panel_artists"),
}, default=str))
"""

# Run after every cell that does not train has been run a second time, in order, in the same kernel.
AFTER_RERUN = """
print("AFTER-RERUN " + _json.dumps({"x_train": list(x_train.shape), "x_test": list(x_test.shape),
                                    "x_fit": list(x_fit.shape), "learn_error": learn_error,
                                    "accuracy": accuracy, "errors": errors}))
"""
TRAINS = re.compile(r"(?<!def )\btrain\(")  # a cell that trains a network: minutes to run again, so run once


def same_json(value):
    """``value`` as the notebook's JSON line gives it (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=str))


def layers_of(model) -> list:
    return same_json([[type(layer).__name__, layer.get_config()] for layer in model.layers])


def unnamed(layers: list) -> list:
    """Layers without their names: Keras numbers the names of unnamed layers (random_rotation_4) per process."""
    return [[kind, {key: value for key, value in config.items() if key != "name"}] for kind, config in layers]


def text_of(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.output_type == "stream")


def pngs_of(notebook) -> list[bytes]:
    return [
        base64.b64decode(output.data["image/png"])
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def run_notebook(notebook, folder) -> dict:
    """Run ``notebook`` top to bottom in a real Jupyter kernel (nbclient: the kernel `make lab` uses) in
    ``folder``, with PRELUDE before its first cell, KEY_NUMBERS after its last, then every cell that does not train
    a second time, in order, and AFTER_RERUN. The notebook keeps the outputs of its first run; the rest is returned."""
    cells = list(notebook.cells)
    code = [cell for cell in cells if cell.cell_type == "code"]
    again = [nbformat.v4.new_code_cell(cell.source) for cell in code if not TRAINS.search(cell.source)]
    extras = [nbformat.v4.new_code_cell(KEY_NUMBERS), *again, nbformat.v4.new_code_cell(AFTER_RERUN)]
    notebook.cells = [nbformat.v4.new_code_cell(PRELUDE), *cells, *extras]
    resources = {"metadata": {"path": str(folder)}}
    client = NotebookClient(notebook, timeout=1200, kernel_name="python3", resources=resources)
    started = time.monotonic()
    client.execute()
    seconds = time.monotonic() - started
    notebook.cells = cells

    def line(cell, prefix):
        [found] = [text for text in text_of(cell).splitlines() if text.startswith(prefix)]
        return json.loads(found.removeprefix(prefix))

    return {
        "numbers": line(extras[0], "KEY-NUMBERS "),
        "after_rerun": line(extras[-1], "AFTER-RERUN "),
        "rerun_errors": [o for cell in again for o in cell.outputs if o.output_type == "error"],
        "seconds": seconds,
    }


@pytest.fixture(scope="module")
def lesson(tmp_path_factory):
    """lesson.ipynb, copied alone into an empty folder with data/mnist.npz, run top to bottom in a real Jupyter
    kernel, its key numbers printed, every cell that does not train run again; the executed notebook written there
    and exported to HTML as `make lab` exports it."""
    folder = tmp_path_factory.mktemp("lesson")
    (folder / "data").mkdir()
    shutil.copy(mnist_npz(), folder / "data" / "mnist.npz")
    shutil.copy(ROOT / "lesson.ipynb", folder / "lesson.ipynb")
    notebook = nbformat.read(folder / "lesson.ipynb", as_version=4)
    for cell in notebook.cells:  # nothing of the committed run is left to be mistaken for this one's
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    run = run_notebook(notebook, folder)
    nbformat.write(notebook, folder / "lesson.ipynb")
    export = subprocess.run(  # the command of `make lab` (test_make_lab_runs_the_notebook checks that it is)
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output", "report", "lesson.ipynb"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert export.returncode == 0, export.stderr[-3000:]
    return {
        **run,
        "folder": folder,
        "notebook": notebook,
        "text": "\n".join(text_of(cell) for cell in notebook.cells),
    }


# --- the source and the notebook, without running it ---------------------------------------------------------------
def test_lesson_py_and_ipynb_agree_cell_by_cell():
    source = jupytext.read(ROOT / "lesson.py")
    committed = nbformat.read(ROOT / "lesson.ipynb", as_version=4)
    cells = [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in source.cells]
    assert [(cell.cell_type, cell.source, cell.metadata.get("tags", [])) for cell in committed.cells] == cells, (
        "lesson.ipynb is not made from lesson.py as it stands: run `make notebook`"
    )
    assert committed.metadata["kernelspec"]["name"] == "python3"


def test_committed_notebook_shows_its_outputs():
    """The repository's copy was run (make notebook): every code cell has its output, no error, all its figures."""
    committed = nbformat.read(ROOT / "lesson.ipynb", as_version=4)
    code = [cell for cell in committed.cells if cell.cell_type == "code"]
    assert all(cell.outputs and cell.execution_count for cell in code), "run `make notebook`"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))  # top to bottom, once
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    pictures = pngs_of(committed)
    assert len(pictures) >= 15, len(pictures)
    source = jupytext.read(ROOT / "lesson.py")
    shown = sum(cell.source.count("plt.show()") for cell in source.cells if cell.cell_type == "code")
    assert len(pictures) == shown, (len(pictures), shown)  # one image per plt.show(), none left over


def test_lesson_imports_only_the_framework_and_the_standard_library():
    code = "\n".join(cell.source for cell in jupytext.read(ROOT / "lesson.py").cells if cell.cell_type == "code")
    tree = ast.parse(code)  # plain Python: no magics, no shell escapes
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) <= ALLOWED, imported - set(sys.stdlib_module_names)
    assert "mnistlab" not in code and "train_cnn" not in imported and "sys.path" not in code


def test_markdown_states_no_results():
    """Results are printed from the numbers a cell computes, never typed into the text."""
    for cell in jupytext.read(ROOT / "lesson.py").cells:
        if cell.cell_type == "markdown":
            assert not TYPED_RESULT.search(cell.source), (TYPED_RESULT.search(cell.source), cell.source)


@pytest.mark.parametrize(
    ("text", "typed"),
    [("CNN 99%, dense 98%", True), ("99.1 % of them", True), ("157 errors", True), ("in 75 s", True),
     ("at 2.5 s per epoch", True), ("five random views", False), ("the 28×28 frame", False), ("0–255", False)],
)
def test_typed_result_pattern(text, typed):
    assert bool(TYPED_RESULT.search(text)) is typed


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_runs_the_notebook_and_exports_it():
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(ROOT), "lab", "notebook", "PY=python"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    commands = [line.strip() for line in result.stdout.splitlines()]
    for expected in (
        "python -m jupyter execute lesson.ipynb --output results/.lab/lesson",
        "python -m jupyter nbconvert --to html --output report results/.lab/lesson.ipynb",
        "mv results/.lab/lesson.ipynb results/.lab/report.html results/ && rmdir results/.lab",
        "python -m jupytext --to ipynb lesson.py",
        "python -m jupyter execute --inplace lesson.ipynb",
    ):
        assert expected in commands, (expected, commands)
    assert not any("visualize.py" in line or "experiments.py" in line or "report.py" in line for line in commands)


# --- the notebook, run -------------------------------------------------------------------------------------------
@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_runs_alone_quietly_and_says_where_mnist_came_from(lesson):
    text = lesson["text"]
    assert "MNIST from data/mnist.npz (a local file" in text
    assert "every network here takes batches of shape (N, 28, 28, 1)" in text
    assert lesson["numbers"]["input_shape"] == [28, 28, 1]
    assert sorted(path.name for path in lesson["folder"].iterdir()) == ["data", "lesson.ipynb", "report.html"]
    # A quiet start: the notebook's own line comes first, and no cell shows TensorFlow's start-up log.
    outputs = [output for cell in lesson["notebook"].cells for output in cell.get("outputs", [])]
    assert outputs[0].output_type == "stream" and outputs[0].text.startswith("Keras "), outputs[0]
    noise = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not [t for t in noise if "oneDNN" in t or "absl" in t or "cpu_feature_guard" in t], noise
    numbers = lesson["numbers"]
    assert list(numbers["section_seconds"]) == [
        "0. Keras and the two networks",
        "1. MNIST",
        "2. convolution by hand",
        "3. kernels are feature detectors",
        "4. parameter sharing",
        "5. ReLU, sigmoid, tanh",
        "6. max-pooling",
        "7. dropout",
        "8. augmentation",
        "9. CNN against dense",
    ]
    assert numbers["total_seconds"] == pytest.approx(sum(numbers["section_seconds"].values()))
    assert numbers["total_seconds"] < lesson["seconds"]  # computation only: the kernel's start is not in it
    print(f"the notebook ran in {lesson['seconds']:.0f} s (its own count: {numbers['total_seconds']:.0f} s)")


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_every_cell_can_run_twice(lesson):
    """After the run, every cell that does not train is run a second time, in order, in the same kernel: no
    error, the channel axis still added once, and the numbers that depend on the trained networks unchanged."""
    assert lesson["rerun_errors"] == []
    after, numbers = lesson["after_rerun"], lesson["numbers"]
    assert after["x_train"] == [60000, 28, 28, 1] and after["x_test"] == [10000, 28, 28, 1]
    assert after["x_fit"] == [54000, 28, 28, 1]
    assert after["accuracy"] == numbers["accuracy"] and after["errors"] == numbers["errors"]
    assert after["learn_error"] == pytest.approx(numbers["learn_error"], rel=1e-3)  # the same seed, the same steps
    source = jupytext.read(ROOT / "lesson.py")
    trains = [cell.source for cell in source.cells if cell.cell_type == "code" and TRAINS.search(cell.source)]
    assert trains and all("set_random_seed(" in cell for cell in trains)  # not run twice here: each seeds itself


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_hand_convolution_equals_conv2d_and_the_formula(lesson):
    numbers = lesson["numbers"]
    assert numbers["conv_max_difference"] < 1e-5
    assert numbers["conv_sizes"] == numbers["keras_sizes"] == numbers["formula_sizes"]
    assert numbers["conv_sizes"]["valid"] == {"1": [26, 26], "2": [13, 13], "3": [9, 9], "4": [7, 7]}
    assert numbers["conv_sizes"]["same"] == {"1": [28, 28], "2": [14, 14], "3": [10, 10], "4": [7, 7]}
    assert "valid padding: stride 1 → 26×26, stride 2 → 13×13, stride 3 → 9×9, stride 4 → 7×7" in lesson["text"]
    assert f"from the maps by hand is {numbers['conv_max_difference']:.1e}" in lesson["text"]
    assert "The formula gives every size (True); Keras' Conv2D gives the same sizes (True)" in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_networks_and_schedule_are_the_scripts(lesson):
    """Layer for layer (types and configurations), parameter for parameter, with the scripts' default settings and
    the scripts' one-cycle learning rate, step by step."""
    numbers = lesson["numbers"]
    assert numbers["cnn_layers"] == layers_of(train_cnn.build_model())
    assert numbers["dense_layers"] == layers_of(train_dense.build_model())
    augmentation = unnamed(numbers["augmentation_layers"])
    assert (
        augmentation == unnamed(layers_of(train_cnn.augmentation())) == unnamed(layers_of(train_dense.augmentation()))
    )
    assert [kind for kind, _ in augmentation] == ["RandomRotation", "RandomZoom", "RandomTranslation"]
    assert numbers["parameters"] == {
        "cnn": train_cnn.build_model().count_params(),
        "dense": train_dense.build_model().count_params(),
    }
    fast = train_cnn.PRESETS["fast"]
    assert numbers["settings"]["cnn"] == {key: fast[key] for key in ("epochs", "batch_size", "learning_rate")}
    assert numbers["settings"]["dense"] == train_dense.DEFAULTS
    for key, rates in numbers["one_cycle"].items():
        peak, steps = float(key.split("/")[0]), int(key.split("/")[1])
        for script in (train_cnn, train_dense):
            theirs = [float(script.one_cycle(peak, steps)(step)) for step in range(steps + 1)]
            assert rates == pytest.approx(theirs, rel=1e-6, abs=1e-12), (script.__name__, key)
        assert max(rates) == pytest.approx(peak) and rates[0] == 0  # it does rise and fall


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_trained_kernels_are_detectors(lesson):
    """Trained kernels' neighbour agreement is far above any of 200 random sets; the kernel learned back from a
    digit and its Sobel map equals the Sobel kernel within the stated tolerance."""
    numbers = lesson["numbers"]
    agreement, random_sets = numbers["agreement"], numbers["random_agreement"]
    assert len(random_sets) == 200
    assert agreement["after"] > max(random_sets) + AGREEMENT_MARGIN
    assert agreement["after"] > agreement["before"] + AGREEMENT_MARGIN  # the same kernels, before and after
    assert numbers["learn_tolerance"] <= 1e-3 and numbers["learn_error"] < numbers["learn_tolerance"]
    assert "equal within the tolerance of 0.001" in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_feature_maps_confusion_and_errors(lesson):
    numbers = lesson["numbers"]
    assert numbers["feature_map_shapes"] == {
        "relu1": [24, 24, 32],
        "pool1": [12, 12, 32],
        "relu2": [10, 10, 64],
        "pool2": [5, 5, 64],
    }
    for name in ("cnn", "dense"):
        matrix = np.array(numbers["confusion"][name])
        assert matrix.sum() == 10000 and matrix.sum() - np.trace(matrix) == numbers["errors"][name]
        assert numbers["accuracy"][name] == pytest.approx(1 - numbers["errors"][name] / 10000)
    assert f"Errors on 10,000 test digits: CNN {numbers['errors']['cnn']}, dense network" in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_parameter_sharing_and_kernels_over_channels(lesson):
    numbers = lesson["numbers"]
    conv, dense, rgb, with_pooling, without_pooling = numbers["sharing"]
    assert conv == 32 * 9 + 32  # a 3×3 conv layer: 320 weights, wherever it looks
    assert dense == 784 * 26 * 26 * 32 + 26 * 26 * 32
    assert rgb == 32 * 3 * 3 * 3 + 32
    assert with_pooling == train_cnn.build_model().count_params() < without_pooling  # pooling shrinks what follows
    assert "each kernel has shape (3, 3, 3)" in lesson["text"]
    assert numbers["depth_difference"] < 1e-4  # conv2 by hand, summed over 32 channels, equals Keras
    assert "conv2's kernels: (3, 3, 32) each, 64 of them" in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_relu_gradient_reaches_the_first_layer_and_he_start(lesson):
    numbers = lesson["numbers"]
    gradients, signals = numbers["gradients"], numbers["signals"]
    sigmoid, relu, he = gradients["sigmoid"], gradients["relu"], gradients["relu_he"]
    assert relu[0] > GRADIENT_FACTOR * sigmoid[0]
    assert sigmoid[0] / sigmoid[-1] < 1e-3  # vanishing: the first layer gets almost nothing
    assert relu[0] / relu[-1] > 1000 * sigmoid[0] / sigmoid[-1]
    assert he[0] > HE_FACTOR * relu[0]  # He's start: a larger gradient per weight in the first layer
    assert signals["relu_he"][-1] > HE_FACTOR * signals["relu"][-1]  # and a signal that does not fade
    accuracy = numbers["activation_accuracy"]
    assert accuracy["relu"][-1] > accuracy["sigmoid"][-1] + ACTIVATION_MARGIN
    assert accuracy["relu_he"][-1] > accuracy["sigmoid"][-1] + ACTIVATION_MARGIN


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_max_pooling_split_and_receptive_field(lesson):
    numbers = lesson["numbers"]
    assert numbers["pool_kept"] == {"2": 12 * 12 * 32, "4": 6 * 6 * 32, "8": 3 * 3 * 32, "24": 32}
    accuracy, features = numbers["pool_accuracy"], numbers["pool_features"]
    assert features == {"2×2 pool": 4608, "4×4 pool": 1152, "8×8 pool": 288, "24×24 pool, 288 kernels": 288,
                        "24×24 pool": 32}
    assert accuracy["2×2 pool"] > accuracy["24×24 pool"] + POOL_MARGIN  # too large a pool costs
    assert accuracy["8×8 pool"] > accuracy["24×24 pool, 288 kernels"] + WHERE_MARGIN  # losing where, same size
    assert accuracy["24×24 pool, 288 kernels"] > accuracy["24×24 pool"] + COUNT_MARGIN  # fewer numbers, no where
    assert numbers["receptive_field"] == {"formula": 12, "rows": 12, "columns": 12}


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_dropout_on_in_training_off_in_testing_and_narrows_the_gap_in_every_seed(lesson):
    numbers = lesson["numbers"]
    assert numbers["dropout_layer_differ"] is True
    assert numbers["dropout_training_differ"] is True and numbers["dropout_inference_agree"] is True
    gaps = numbers["dropout_gaps"]
    assert len(gaps["0.0"]) == len(gaps["0.5"]) >= 3
    narrowed = [without - with_ for without, with_ in zip(gaps["0.0"], gaps["0.5"], strict=True)]
    assert min(narrowed) > DROPOUT_GAP_MARGIN, narrowed
    assert "in every seed, so dropout narrows the overfitting gap here." in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_augmentation_helps_with_few_images_in_every_seed(lesson):
    runs = lesson["numbers"]["augment_runs"]
    smallest = min({int(key.split("/")[0]) for key in runs["plain"]})
    gains = [runs["augmented"][key] - runs["plain"][key] for key in runs["plain"] if key.startswith(f"{smallest}/")]
    assert len(gains) >= 3 and min(gains) > AUGMENT_MARGIN, gains
    assert f"{smallest:,} images: plain" in lesson["text"] and "augmentation helps in every seed." in lesson["text"]


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_cnn_beats_dense_with_more_arithmetic_and_loses_more_to_shuffled_pixels(lesson):
    numbers = lesson["numbers"]
    assert numbers["accuracy"]["cnn"] > numbers["accuracy"]["dense"] + LEAD_MARGIN
    assert numbers["arithmetic"] == {
        "cnn": 24 * 24 * 32 * 25 + 10 * 10 * 64 * 9 * 32 + 1600 * 10,
        "dense": 784 * 512 + 512 * 512 + 512 * 10,
    }
    shifted = numbers["shifted_accuracy"]
    assert shifted["cnn"][0] > shifted["cnn"][6] + 0.5 and shifted["cnn"][3] > shifted["dense"][3] + SHIFT_MARGIN
    assert "(4.2 pixels diagonally)" in lesson["text"]
    retrained = numbers["retrained"]
    cnn_loss = retrained["cnn/original"] - retrained["cnn/shuffled"]
    dense_loss = retrained["dense/original"] - retrained["dense/shuffled"]
    assert abs(dense_loss) < DENSE_SHUFFLE_LIMIT  # a dense layer does not care about the pixels' order
    assert cnn_loss > dense_loss + SHUFFLE_MARGIN  # the CNN does


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_every_figure_and_every_panel_is_drawn(lesson):
    """Each image output holds a drawing, not empty axes: colour (maps, lines, bars) or grey images (digits,
    kernels); and every panel of every figure holds at least one drawn thing (an image, a line, a bar or a point),
    counted at each plt.show(), so one blank panel in a figure of many fails."""
    pictures = pngs_of(lesson["notebook"])
    assert len(pictures) == sum(
        cell.source.count("plt.show()") for cell in lesson["notebook"].cells if cell.cell_type == "code"
    )
    panels = lesson["numbers"]["panel_artists"]
    assert len(panels) == len(pictures)
    for index, counts in enumerate(panels):
        assert counts and min(counts) > 0, (index, counts)  # a panel with nothing drawn in it
    for index, png in enumerate(pictures):
        with Image.open(io.BytesIO(png)) as image:
            assert image.width > 300, (index, image.size)
            rgb = np.asarray(image.convert("RGB"), dtype=int)
        colour = (rgb.max(axis=2) - rgb.min(axis=2) > 60).mean()
        grey = (rgb.max(axis=2) < 200).mean()
        assert colour > 0.005 or grey > 0.2, (index, colour, grey)


@pytest.mark.timeout(NOTEBOOK_TIMEOUT)
def test_report_shows_every_figure_in_a_real_browser(lesson, tmp_path):
    """`make lab`'s HTML export (results/report.html) in headless Chromium: every image output of the executed
    notebook is an image of the page, and each one decodes (naturalWidth > 0)."""
    page = (lesson["folder"] / "report.html").read_text(encoding="utf-8")
    count = len(pngs_of(lesson["notebook"]))
    assert len(re.findall(r'<img[^>]*\ssrc="data:image/png;base64,', page)) == count  # embedded: the page stands alone
    assert "Test accuracy on 10,000 images: CNN" in page
    chromium, _ = find_chromium(driver=False)
    probe = tmp_path / "probe.html"  # a script swaps the page for one line with the counts once everything loaded
    probe.write_text(
        page.replace(
            "</body>",
            "<script>window.addEventListener('load',()=>{const i=[...document.images];"
            "document.title='loaded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+' of '+i.length;"
            "document.body.innerHTML='<h1 id=r>'+document.title+'</h1>';});</script></body>",
        ),
        encoding="utf-8",
    )
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False
    )
    assert f"loaded {count} of {count}" in dom.stdout, dom.stdout[-500:] + dom.stderr[-500:]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            *flags,
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (lesson["folder"] / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(1 << 20)
        assert colours is not None and len(colours) > 50, "the screenshot is blank"


# --- the training scripts' augmentation, which step 8 of the notebook copies ---------------------------------------
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
