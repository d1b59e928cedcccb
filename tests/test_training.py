"""Real training runs of both scripts on a slice of real MNIST: accuracy floors and the records they write."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import SMALL_EPOCHS, SMALL_TRAIN, data_flags, mnist_npz, output_flags, run_script

import compare
import train_cnn

# Floors for 3 epochs on 6,000 real training images, checked on all 10,000 test images.
CNN_FLOOR = 0.95
DENSE_FLOOR = 0.90


def run_record(trained, name):
    return json.loads((trained["results"] / f"{name}_run.json").read_text())


@pytest.mark.parametrize(("name", "floor"), [("cnn", CNN_FLOOR), ("dense", DENSE_FLOOR)])
def test_short_real_training_reaches_floor(trained, name, floor):
    record = run_record(trained, name)
    assert record["test_accuracy"] >= floor, record["test_accuracy"]
    assert record["test_images"] == 10000
    assert record["test_errors"] == round((1 - record["test_accuracy"]) * 10000)


def test_cnn_beats_dense_on_the_same_budget(trained):
    assert run_record(trained, "cnn")["test_accuracy"] > run_record(trained, "dense")["test_accuracy"]


@pytest.mark.parametrize("name", ["cnn", "dense"])
def test_run_record_contents(trained, name):
    record = run_record(trained, name)
    assert record["epochs"] == SMALL_EPOCHS
    assert record["train_images"] + record["validation_images"] == SMALL_TRAIN
    assert record["validation_images"] == SMALL_TRAIN // 10
    assert record["parameters"] == keras.saving.load_model(trained["models"] / f"{name}.keras").count_params()
    assert record["training_seconds"] > 0 and record["seed"] == 1
    assert record["data"] == str(mnist_npz()) and record["precision"] in ("float32", "mixed_bfloat16")
    for key in ("tensorflow", "keras", "numpy", "cpu", "gpu", "python"):
        assert record["environment"][key], key


@pytest.mark.parametrize("name", ["cnn", "dense"])
def test_history_has_every_epoch(trained, name):
    epochs = json.loads((trained["results"] / f"{name}_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in epochs] == list(range(SMALL_EPOCHS))
    floor = CNN_FLOOR if name == "cnn" else DENSE_FLOOR
    for row in epochs:
        assert 0 < row["loss"] < 2.5 and 0 < row["val_loss"] < 1.0, row  # cross-entropy of 10 classes starts at 2.3
        assert 0.5 < row["accuracy"] <= 1 and floor - 0.1 < row["val_accuracy"] <= 1, row
        assert 0.1 < row["epoch_seconds"] < 300, row
    assert epochs[-1]["val_accuracy"] >= floor - 0.02  # 600 validation images: a noisier floor than the test set's
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_summary_line_and_run_log(trained):
    out = trained["outputs"]["train_cnn.py"].stdout
    assert "cnn: test accuracy" in out and "errors / 10,000" in out and "parameters" in out
    lines = (trained["results"] / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["cnn", "dense"]


def test_no_temp_or_backup_files_left(trained):
    leftovers = [p.name for p in trained["models"].iterdir()] + [p.name for p in trained["results"].iterdir()]
    assert sorted(leftovers) == sorted(
        [
            "cnn.keras",
            "dense.keras",
            "cnn_run.json",
            "cnn_history.json",
            "dense_run.json",
            "dense_history.json",
            "runs.jsonl",
        ]
    )


@pytest.mark.parametrize("channel_axis", [False, True])
def test_saved_model_is_self_contained_on_raw_pixels(trained, mnist, channel_axis):
    """Anyone can load the .keras file and call it on raw 0-255 uint8 images, with or without the channel axis."""
    model = keras.saving.load_model(trained["models"] / "cnn.keras", safe_mode=True)
    images = mnist.x_test[:500, ..., None] if channel_axis else mnist.x_test[:500]
    assert images.dtype == np.uint8
    predicted = np.asarray(model.predict(images, verbose=0)).argmax(axis=1)
    assert (predicted == mnist.y_test[:500]).mean() >= CNN_FLOOR - 0.02


def test_val_split_zero_trains_on_every_image_and_plots_training_accuracy(tmp_path):
    result = run_script(
        "train_dense.py",
        "--val-split",
        "0",
        "--train-size",
        "2000",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        *output_flags(tmp_path),
        *data_flags(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "dense_run.json").read_text())
    assert (record["train_images"], record["validation_images"]) == (2000, 0)
    history = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert len(history) == 1 and "val_accuracy" not in history[0] and history[0]["accuracy"] > 0.5

    # compare.py's learning-curve panels fall back to training accuracy for such a run, and say so.
    row = {key: record[key] for key in ("test_accuracy", "training_seconds", "parameters")}
    figure = compare.figure({"dense": {**row, "images_per_second": 1000.0}}, {"dense": history})
    legend = [text.get_text() for text in figure.axes[4].get_legend().get_texts()]
    assert legend == ["Dense (training accuracy)"]
    assert figure.axes[4].get_title() == "Accuracy per epoch"  # not "Validation": this curve is training accuracy


def test_presets_set_defaults_that_flags_still_override():
    fast, best = train_cnn.parse_args([]), train_cnn.parse_args(["--preset", "best"])
    assert (fast.epochs, fast.val_split, fast.augment) == (5, 0.1, False)
    assert (best.epochs, best.val_split, best.augment) == (30, 0.0, True)
    overridden = train_cnn.parse_args(["--preset", "best", "--val-split", "0.1", "--epochs", "2"])
    assert (overridden.epochs, overridden.val_split, overridden.augment) == (2, 0.1, True)


def test_tensorboard_flag_writes_event_files(trained):
    """train_dense.py --tensorboard DIR (in the shared fixture) logs every epoch's loss and accuracy, for training
    and for validation, and they agree with the script's own history."""
    import tensorflow as tf

    history = json.loads((trained["results"] / "dense_history.json").read_text())["epochs"]
    for split, prefix in (("train", ""), ("validation", "val_")):
        logged: dict[str, dict[int, float]] = {}
        for path in (trained["tensorboard"] / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in (v for v in event.summary.value if v.tag.startswith("epoch_")):
                    logged.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
        for metric in ("loss", "accuracy"):
            assert sorted(logged[f"epoch_{metric}"]) == list(range(SMALL_EPOCHS)), (split, logged.keys())
            expected = [row[prefix + metric] for row in history]
            values = [logged[f"epoch_{metric}"][step] for step in range(SMALL_EPOCHS)]
            assert values == pytest.approx(expected, rel=1e-4), (split, metric)


USER_FLAGS = (
    "--data",
    "--models-dir",
    "--results-dir",
    "--epochs",
    "--batch-size",
    "--learning-rate",
    "--seed",
    "--train-size",
    "--val-split",
    "--augment",
    "--precision",
    "--deterministic",
    "--resume",
    "--tensorboard",
    "--distribute",
)


@pytest.mark.parametrize(
    ("script", "flags", "defaults"),
    [
        ("train_cnn.py", [], {"epochs": "5", "batch-size": "384", "val-split": "0.1", "augment": "False"}),
        (
            "train_cnn.py",
            ["--preset", "best"],
            {"epochs": "30", "batch-size": "256", "val-split": "0.0", "augment": "True"},
        ),
        ("train_dense.py", [], {"epochs": "14", "batch-size": "1024", "learning-rate": "0.005"}),
    ],
    ids=["cnn", "cnn-best", "dense"],
)
def test_help_lists_every_flag_with_its_default(script, flags, defaults):
    result = run_script(script, *flags, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())  # argparse wraps help text at any space
    for flag in USER_FLAGS + (("--preset",) if script == "train_cnn.py" else ()):
        assert flag in text, flag
    for flag, value in defaults.items():
        help_of_flag = text.split(f"--{flag}", 2)[2].split(" --", 1)[0]  # after the usage line's mention
        assert f"(default: {value})" in help_of_flag, (flag, help_of_flag)
    assert "--track-test" not in text and "--cpu-replicas" not in text  # flags of older versions are gone
