"""compare.py end to end on small, really trained models."""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil

import pytest
from conftest import assert_one_line_error, data_flags, run_script
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
    the sentence under the table names the network that made fewer errors."""
    out, payload = compared[0].stdout, json.loads((compared[1] / "comparison.json").read_text())
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
        assert row["parameters"] == record["parameters"] and row["images_per_second"] > 0 < row["latency_ms"]
    winner = "The CNN makes" if rows[0]["test_errors"] <= rows[1]["test_errors"] else "The dense network makes"
    assert check_table_and_sentence(out, payload).startswith(winner), out


def test_json_has_every_number(compared, trained):
    payload = json.loads((compared[1] / "comparison.json").read_text())
    for name in ("cnn", "dense"):
        row = payload["models"][name]
        recorded = json.loads((trained["results"] / f"{name}_run.json").read_text())
        # re-evaluated now: the same model on the same images gives the recorded accuracy (bf16 rounding aside)
        assert row["test_accuracy"] == pytest.approx(recorded["test_accuracy"], abs=0.002)
        assert row["parameters"] == recorded["parameters"]
        assert row["images_per_second"] > 1000 and 0 < row["latency_ms"] < 100
        assert row["model_file_kib"] > 10
    assert payload["models"]["cnn"]["parameters"] < payload["models"]["dense"]["parameters"]


def test_figure_is_a_real_png(compared):
    """Six panels, each with something drawn inside its axes in both networks' colours: bars or a curve."""
    import numpy as np

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
    monkeypatch.setattr(compare, "images_per_second", lambda predict, images: 5000.0)
    monkeypatch.setattr(compare, "latency_ms", lambda predict, image: 1.0)
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


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_full_or_read_only_results_folder(quick_compare, monkeypatch, fault):
    """One line naming the file it could not write, exit 1; the previous comparison (its JSON and its figure) stays
    as it was, every byte, and no temp file is left."""
    models, results, run = quick_compare
    before = {path.name: path.read_bytes() for path in results.iterdir()}
    if fault == "full":  # the small JSON fits, the figure does not
        monkeypatch.setattr(Figure, "savefig", half_a_png)
        failed = results / "comparison.png"
        reason = "No space left on device"
    else:  # the first file written is refused
        real_open = builtins.open

        def read_only_open(path, mode="r", *args, **kwargs):
            if os.path.dirname(os.fspath(path)) == str(results) and set(mode) & set("wax+"):
                raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", read_only_open)
        failed = results / "comparison.json"
        reason = "Read-only file system"
    with pytest.raises(SystemExit) as stopped:
        run()
    assert stopped.value.code == (
        f"error: cannot write {failed}: {reason}; free some space or choose another --results-dir"
    )
    after = {path.name: path.read_bytes() for path in results.iterdir()}
    assert sorted(after) == sorted(before)  # no temp file left
    changed = [name for name in before if after[name] != before[name]]
    assert changed == [], f"{changed}: not the previous comparison's any more, yet this one was not written whole"
