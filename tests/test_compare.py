"""compare.py end to end on small, really trained models."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error, data_flags, run_script
from matplotlib.figure import Figure
from PIL import Image

import compare
import train_cnn


@pytest.fixture(scope="module")
def compared(trained, tmp_path_factory):
    results = tmp_path_factory.mktemp("compare")
    for path in trained["results"].iterdir():
        shutil.copy(path, results)
    result = run_script(
        "compare.py", "--models-dir", str(trained["models"]), "--results-dir", str(results), *data_flags()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, results


def test_table_in_terminal(compared, trained):
    """Every cell of the table, in the CNN's column and the dense network's: the numbers of comparison.json, as the
    README shows them, and those numbers are the models' and their records' (the file sizes, the training times);
    the sentence under the table names the network that made fewer errors; the line above it names the machine and
    the backend, and comparison.json says so too."""
    out, payload = compared[0].stdout, json.loads((compared[1] / "comparison.json").read_text())
    import keras

    machine = f"{os.cpu_count()} cores, Keras {keras.__version__} (tensorflow)"
    assert f"\ntimed on {machine}\n" in out and payload["machine"] == machine, out
    cells = table_cells(out)
    expected = {
        "test accuracy": "{test_accuracy:.2%}",
        "errors / 10,000 test images": "{test_errors:,}",
        "parameters": "{parameters:,}",
        "model file size": "{model_file_kib:,.0f} KiB",
        "training time": "{training_seconds:.1f} s",
        "time per epoch": "{seconds_per_epoch:.2f} s",
        "inference throughput": "{images_per_second:,.0f} images/s",
        "one-image latency": "{latency_ms:.2f} ms",
    }
    rows = [payload["models"]["cnn"], payload["models"]["dense"]]  # the header's order: CNN, then DENSE
    assert cells == {label: [cell.format(**row) for row in rows] for label, cell in expected.items()}, out
    for name, row in zip(("cnn", "dense"), rows, strict=True):
        record = json.loads((trained["results"] / f"{name}_run.json").read_text())
        assert row["model_file_kib"] == (trained["models"] / f"{name}.keras").stat().st_size / 1024, name
        assert (row["training_seconds"], row["epochs"]) == (record["training_seconds"], record["epochs"]), name
        assert row["seconds_per_epoch"] == pytest.approx(record["training_seconds"] / record["epochs"]), name
        assert row["parameters"] == record["parameters"] and row["precision"] == record["precision"], name
        for speed in ("images_per_second", "latency_ms"):  # how fast is the benchmark's to say, not a test's
            assert math.isfinite(row[speed]) and row[speed] > 0, (name, speed, row[speed])
    winner = "The CNN makes" if rows[0]["test_errors"] <= rows[1]["test_errors"] else "The dense network makes"
    assert check_table_and_sentence(out, payload).startswith(winner), out


def test_json_has_every_number(compared, trained):
    payload = json.loads((compared[1] / "comparison.json").read_text())
    for name in ("cnn", "dense"):
        row = payload["models"][name]
        recorded = json.loads((trained["results"] / f"{name}_run.json").read_text())
        # re-evaluated now: the same model on the same images gives the recorded accuracy (bf16 rounding aside)
        assert row["test_accuracy"] == pytest.approx(recorded["test_accuracy"], abs=0.002)
        assert row["recorded_test_accuracy"] == recorded["test_accuracy"]
        assert row["parameters"] == recorded["parameters"]
        assert row["model_file_kib"] > 10
    assert payload["data"] == data_flags()[1]
    assert payload["models"]["cnn"]["parameters"] < payload["models"]["dense"]["parameters"]


def test_figure_is_a_real_png(compared):
    """Six panels, each with something drawn inside its axes in both networks' colours: bars or a curve."""
    with Image.open(compared[1] / "comparison.png") as image:
        assert image.format == "PNG"
        assert image.width > 1000 and image.height > 600
        pixels = np.asarray(image.convert("RGB")).astype(int)
    height, width, _ = pixels.shape
    colours = {"cnn": (0x1F, 0x77, 0xB4), "dense": (0xFF, 0x7F, 0x0E)}
    for row in range(2):
        for col in range(3):  # the middle of each panel of the 2×3 grid (titles and tick labels are at its edges)
            panel = pixels[
                int(height * (0.06 + 0.48 * row)) : int(height * (0.46 + 0.48 * row)),
                int(width * (0.05 + 0.335 * col)) : int(width * (0.32 + 0.335 * col)),
            ]
            for name, rgb in colours.items():
                drawn = (np.abs(panel - rgb).sum(axis=2) < 30).sum()
                assert drawn > 20, (row, col, name, drawn)


def test_missing_model_names_the_command(trained, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(trained["models"] / "cnn.keras", models)
    result = run_script("compare.py", "--models-dir", str(models), "--results-dir", str(trained["results"]))
    assert_one_line_error(result, 1, "dense.keras not found; run `python train_dense.py` first")


def test_missing_run_record_names_the_command(trained, tmp_path):
    result = run_script("compare.py", "--models-dir", str(trained["models"]), "--results-dir", str(tmp_path))
    assert_one_line_error(result, 1, "cnn_run.json not found; run `python train_cnn.py` first")


def table_cells(out: str) -> dict[str, list[str]]:
    """compare.py's table as printed: each row's label, then one cell per network (a label column of 30
    characters, then columns of 20)."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["CNN", "DENSE"])
    rows = {}
    for line in lines[header + 1 : header + 9]:
        rows[line[:30].strip()] = [line[30:50].strip(), line[50:70].strip()]
    return rows


def check_table_and_sentence(out: str, payload: dict) -> str:
    """The table's accuracy, errors and parameters are comparison.json's; returns the sentence after it."""
    cells = table_cells(out)
    models = [payload["models"]["cnn"], payload["models"]["dense"]]
    assert cells["test accuracy"] == [f"{row['test_accuracy']:.2%}" for row in models], cells
    assert cells["errors / 10,000 test images"] == [f"{row['test_errors']:,}" for row in models], cells
    assert cells["parameters"] == [f"{row['parameters']:,}" for row in models], cells
    for row in models:
        assert row["test_errors"] == round((1 - row["test_accuracy"]) * row["test_images"]), row
    after_table = out.split("\none-image latency", 1)[1].splitlines()[1:]
    return next(line for line in after_table if line.strip())


def test_table_numbers_are_the_json_numbers_and_the_cnn_wins(compared):
    out, payload = compared[0].stdout, json.loads((compared[1] / "comparison.json").read_text())
    cnn, dense = payload["models"]["cnn"], payload["models"]["dense"]
    assert cnn["test_images"] == 10000 and cnn["test_errors"] < dense["test_errors"]  # as trained: see test_training
    sentence = check_table_and_sentence(out, payload)
    fewer, ratio = dense["test_errors"] - cnn["test_errors"], dense["parameters"] / cnn["parameters"]
    assert sentence == (
        f"The CNN makes {fewer:,} fewer errors than the dense network ({cnn['test_errors']} vs "
        f"{dense['test_errors']}) with {ratio:.0f}× fewer parameters."
    ), out


@pytest.fixture
def quick_compare(trained, compared, tmp_path, monkeypatch, small_npz):
    """compare.main in this process on copies of the trained models and records and of a previous comparison, on
    2,000 test images, its timing stubbed out (it is not what these tests check)."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(compared[1], results)
    monkeypatch.setattr(compare, "speed", lambda model, images: (5000.0, 1.0))
    argv = ["--models-dir", str(models), "--results-dir", str(results), "--data", str(small_npz)]
    return models, results, lambda: compare.main(argv)


def test_sentence_when_the_dense_network_makes_fewer_errors(quick_compare, capsys):
    """A CNN that never trained (its saved weights are the initial ones) against the trained dense network."""
    models, results, run = quick_compare
    train_cnn.build_model().save(models / "cnn.keras")
    assert run() == 0
    out = capsys.readouterr().out
    payload = json.loads((results / "comparison.json").read_text())
    cnn, dense = payload["models"]["cnn"]["test_errors"], payload["models"]["dense"]["test_errors"]
    assert dense < cnn
    assert check_table_and_sentence(out, payload) == (
        f"The dense network makes fewer errors here ({dense} vs {cnn}): the CNN is under-trained; train it with the "
        "default flags."
    ), out
    assert "The CNN makes" not in out


def half_a_png(self, path, *args, **kwargs):
    """A full disk while the figure is written: half a PNG, then ENOSPC."""
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n half a figure")
    raise OSError(errno.ENOSPC, "No space left on device")


def refused_inside(folder, real):
    """``real`` (open or os.mkdir) as on a read-only file system at ``folder``: nothing is created inside it."""

    def refuse(path, mode="r", *args, **kwargs):
        inside = os.path.commonpath([os.path.abspath(path), str(folder)]) == str(folder)
        if inside and (not isinstance(mode, str) or set(mode) & set("wax+")):  # os.mkdir's mode is a number
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real(path, mode, *args, **kwargs)

    return refuse


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_or_read_only_results_folder(quick_compare, monkeypatch, fault):
    """One line naming the folder it could not write to and what to do, exit 1; the previous comparison (its JSON
    and its figure) stays as it was, every byte, and no temp file or folder is left. On a full disk the JSON was
    written whole and the figure was not: neither replaces the old one."""
    import builtins

    models, results, run = quick_compare
    before = {path.name: path.read_bytes() for path in results.iterdir()}
    if fault == "full":  # the small JSON fits, the figure does not
        monkeypatch.setattr(Figure, "savefig", half_a_png)
        reason = "No space left on device"
    else:  # no file, no folder can be made in it
        monkeypatch.setattr(builtins, "open", refused_inside(results, builtins.open))
        monkeypatch.setattr(os, "mkdir", refused_inside(results, os.mkdir))
        reason = "Read-only file system"
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == (
        f"error: cannot write to {results}: {reason}; free some space or choose another --results-dir"
    )
    assert sorted(path.name for path in results.iterdir()) == sorted(before)  # no temp file or folder left
    changed = [name for name in before if (results / name).read_bytes() != before[name]]
    assert changed == [], f"{changed}: not the previous comparison's any more, yet this one was not written whole"


@pytest.mark.parametrize(
    ("record", "damage", "expected"),
    [
        ("dense_run.json", "cut off", "JSONDecodeError("),
        ("dense_run.json", "no training_seconds", "KeyError('training_seconds')"),
        ("cnn_history.json", "not a record", "TypeError("),
    ],
)
def test_a_broken_record_names_the_command(trained, tmp_path, record, damage, expected):
    """A record cut off, without a number compare.py reads, or not a JSON object: one line naming the file, what is
    wrong and the command that writes it again; exit 1, no traceback."""
    results = shutil.copytree(trained["results"], tmp_path / "results")
    path = results / record
    if damage == "cut off":
        path.write_text(path.read_text()[:40])
    elif damage == "no training_seconds":
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "training_seconds"}))
    else:
        path.write_text("[1, 2, 3]\n")
    result = run_script("compare.py", "--models-dir", str(trained["models"]), "--results-dir", str(results))
    made_by = "python train_dense.py" if record.startswith("dense") else "python train_cnn.py"
    assert_one_line_error(result, 1, f"{path} is not a whole record ({expected}", f"; run `{made_by}` again")


def test_compare_under_jax_answers_as_under_tensorflow(trained, compared, tmp_path, small_npz):
    """KERAS_BACKEND=jax: compare.py loads the models the TensorFlow backend saved, and tests and times them; each
    network's answers on the 2,000 test images are those of TensorFlow (a float rounding may flip one or two)."""
    import keras

    results = shutil.copytree(trained["results"], tmp_path / "results")
    flags = ["--models-dir", str(trained["models"]), "--results-dir", str(results), "--data", str(small_npz)]
    result = run_script("compare.py", *flags, env={"KERAS_BACKEND": "jax"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    machine = f"{os.cpu_count()} cores, Keras {keras.__version__} (jax)"
    assert f"\ntimed on {machine}\n" in result.stdout, result.stdout
    payload = json.loads((results / "comparison.json").read_text())
    assert payload["machine"] == machine
    with np.load(small_npz) as data:
        images, labels = data["x_test"][..., None].astype("float32"), data["y_test"]
    for name in ("cnn", "dense"):  # the same models, answering here under TensorFlow
        model = compare.load_model(str(trained["models"] / f"{name}.keras"), compare.MODELS[name])
        errors = int((compare.predict_all(model, images).argmax(axis=1) != labels).sum())
        row = payload["models"][name]
        assert row["test_images"] == 2000 and abs(row["test_errors"] - errors) <= 2, (name, row, errors)
        assert math.isfinite(row["images_per_second"]) and row["images_per_second"] > 0 < row["latency_ms"]
    assert table_cells(result.stdout)["errors / 10,000 test images"] == [
        f"{payload['models'][name]['test_errors']:,}" for name in ("cnn", "dense")
    ]


def test_compare_is_a_short_pure_keras_script():
    """Issue 31: at most 260 lines, and no TensorFlow of its own (no `import tensorflow`, no `tf.` call): Keras'
    backends all run it."""
    source = (ROOT / "compare.py").read_text()
    assert len(source.splitlines()) <= 260
    assert not re.search(r"^\s*(import|from)\s+tensorflow|\btf\.", source, re.MULTILINE)
