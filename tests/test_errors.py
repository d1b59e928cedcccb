"""Every bad input: one clear line on stderr, exit 2 for bad flags and 1 for bad data or files, no traceback,
and no file left behind."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import assert_one_line_error, data_flags, first_images, output_flags, run_script

import train_dense


def assert_nothing_written(tmp_path):
    for folder in ("models", "results"):
        path = tmp_path / folder
        if path.exists():
            assert not list(path.iterdir()), list(path.iterdir())


@pytest.mark.parametrize("script", ["train_cnn.py", "train_dense.py"])
@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (["--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--batch-size", "1.5"], "argument --batch-size: invalid int value: '1.5'"),
        (["--train-size", "0"], "--train-size must be at least 1, got 0"),
        (["--train-size", "x"], "argument --train-size: invalid int value: 'x'"),
        (["--learning-rate", "-1"], "--learning-rate must be greater than 0, got -1.0"),
        (["--val-split", "1.5"], "--val-split must be at least 0 and less than 1, got 1.5"),
        (["--precision", "auto"], "argument --precision: invalid choice: 'auto'"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
    ids=[
        "epochs-text",
        "epochs-zero",
        "batch-negative",
        "batch-zero",
        "batch-float",
        "train-size-zero",
        "train-size-text",
        "lr-negative",
        "val-split",
        "precision-auto",  # gone with issue 31: float32 unless told
        "unknown",
    ],
)
def test_bad_flags_exit_2(tmp_path, capsys, monkeypatch, script, flags, fragment):  # noqa: PLR0917 - fixtures
    """Each script's own flag parsing, in this process (fast); the end-to-end run is the test below."""
    module = importlib.import_module(script.removesuffix(".py"))
    monkeypatch.setattr(sys, "argv", [script])  # argparse names the program after it
    with pytest.raises(SystemExit) as stop:
        module.main([*flags, *output_flags(tmp_path)])
    stderr = capsys.readouterr().err
    assert_one_line_error(subprocess.CompletedProcess([script], stop.value.code, "", stderr), 2, fragment)
    assert stderr.startswith("usage: ") and f"{script}: error: " in stderr, stderr
    assert_nothing_written(tmp_path)


def test_label_smoothing_of_1_is_refused(tmp_path, capsys, monkeypatch):
    """train_cnn.py's --label-smoothing (train_dense.py has none): at least 0 and less than 1."""
    monkeypatch.setattr(sys, "argv", ["train_cnn.py"])
    with pytest.raises(SystemExit) as stop:
        importlib.import_module("train_cnn").main(["--label-smoothing", "1", *output_flags(tmp_path)])
    stderr = capsys.readouterr().err
    fragment = "--label-smoothing must be at least 0 and less than 1, got 1.0"
    assert_one_line_error(subprocess.CompletedProcess(["train_cnn.py"], stop.value.code, "", stderr), 2, fragment)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("script", ["train_cnn.py", "train_dense.py"])
def test_a_bad_flag_run_for_real_exits_2(tmp_path, script):
    result = run_script(script, "--epochs", "0", *output_flags(tmp_path))
    assert_one_line_error(result, 2, f"{script}: error: --epochs must be at least 1, got 0")
    assert_nothing_written(tmp_path)


def bad_npz(**arrays):
    """A .npz of a tiny real slice with arrays replaced: by a value, None (left out), or a function of the array."""

    def make(folder, mnist):
        base = first_images(mnist, 100, 50)
        base.update({key: change(base[key]) if callable(change) else change for key, change in arrays.items()})
        path = folder / "data.npz"
        np.savez(path, **{k: v for k, v in base.items() if v is not None})
        return path

    return make


def empty_file(folder, mnist):
    path = folder / "empty.npz"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda folder, mnist: folder / "nowhere.npz", "nowhere.npz: no such file or directory"),
        (empty_file, "empty.npz: not a keras-style .npz"),
        (bad_npz(y_train=lambda labels: labels[:99]), "100 train images but 99 train labels"),
        (bad_npz(y_test=lambda labels: labels + 10), "labels from 10 to 19, expected 0-9"),
        (bad_npz(x_test=np.zeros((50, 32, 32), np.uint8)), "x_test has shape (50, 32, 32)"),
        (bad_npz(y_train=None), "y_train is not a file in the archive"),
        (bad_npz(x_train=np.zeros((100, 28, 28), np.float64)), "dtype float64; expected (N, 28, 28) uint8"),
        (bad_npz(x_train=np.zeros((100, 784), np.uint8)), "x_train has shape (100, 784)"),
    ],
    ids=[
        "missing-path",
        "empty-file",
        "count-mismatch",
        "labels-range",
        "not-28x28",
        "npz-keys",
        "npz-dtype",
        "npz-rank",
    ],
)
def test_bad_data_exit_1(tmp_path, mnist, make, fragment):
    """The whole script (its main(), in this process) stops at the data, in one line, before writing anything."""
    source = tmp_path / "source"
    source.mkdir()
    path = make(source, mnist)
    with pytest.raises(SystemExit) as stop:
        train_dense.main(["--data", str(path), "--epochs", "1", *output_flags(tmp_path)])
    assert_one_line_error(subprocess.CompletedProcess(["train_dense.py"], 1, "", f"{stop.value.code}\n"), 1, fragment)
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda folder, mnist: folder / "nowhere.npz", "nowhere.npz: no such file or directory"),
        (bad_npz(x_train=np.zeros((100, 28, 28), np.float64)), "dtype float64; expected (N, 28, 28) uint8"),
    ],
    ids=["missing-path", "npz-dtype"],
)
def test_bad_data_run_for_real_exits_1(tmp_path, mnist, make, fragment):
    source = tmp_path / "source"
    source.mkdir()
    path = make(source, mnist)
    result = run_script("train_dense.py", "--data", str(path), "--epochs", "1", *output_flags(tmp_path))
    assert_one_line_error(result, 1, fragment)
    assert_nothing_written(tmp_path)


def test_idx_folder_run_for_real_points_to_get_mnist(tmp_path, idx_dir):
    """The scripts read a .npz, not IDX files: a folder of them gives the one command that converts it."""
    result = run_script("train_dense.py", "--data", str(idx_dir), "--epochs", "1", *output_flags(tmp_path))
    assert_one_line_error(result, 1, "get_mnist.py --from-idx", f"`python get_mnist.py --from-idx {idx_dir}`")
    assert_nothing_written(tmp_path)


def test_train_size_larger_than_data(tmp_path, small_npz):
    result = run_script("train_cnn.py", "--data", str(small_npz), "--train-size", "9000", *output_flags(tmp_path))
    assert_one_line_error(result, 1, "--train-size 9000 is larger than the 8000 training images; use at most that")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("flag", ["--models-dir", "--results-dir"])
def test_unwritable_output_dir(tmp_path, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    args = {"--models-dir": str(tmp_path / "models"), "--results-dir": str(tmp_path / "results")}
    args[flag] = str(blocker / "sub")
    result = run_script("train_dense.py", "--epochs", "1", *data_flags(), *[x for pair in args.items() for x in pair])
    assert_one_line_error(result, 1, f"cannot write to the folder '{blocker / 'sub'}'", f"choose another with {flag}")


# --- compare.py on broken models ----------------------------------------------------------------------------------
@pytest.fixture
def compare_dirs(trained, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained["models"], models)
    return models, trained["results"]


def compare(models, results):
    return run_script("compare.py", "--models-dir", str(models), "--results-dir", str(results), *data_flags())


def test_compare_with_model_missing(compare_dirs):
    models, results = compare_dirs
    (models / "cnn.keras").unlink()
    assert_one_line_error(compare(models, results), 1, "cnn.keras not found", "run `python train_cnn.py` first")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_compare_with_corrupt_model(compare_dirs, damage):
    models, results = compare_dirs
    path = models / "dense.keras"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else b"not a keras file at all")
    assert_one_line_error(
        compare(models, results), 1, "dense.keras is not a readable Keras model", "python train_dense.py"
    )


def test_compare_with_model_of_wrong_input(compare_dirs):
    models, results = compare_dirs
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(models / "cnn.keras")
    assert_one_line_error(compare(models, results), 1, "takes inputs of shape (32, 32, 3)", "python train_cnn.py")


def test_compare_bad_flag(tmp_path):
    assert_one_line_error(run_script("compare.py", "--frobnicate"), 2, "unrecognized arguments: --frobnicate")
