"""compare.py end to end on small, really trained models."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import assert_one_line_error, data_flags, run_script
from PIL import Image


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


def test_table_in_terminal(compared):
    out = compared[0].stdout
    for label in (
        "test accuracy",
        "errors / 10,000",
        "parameters",
        "model file size",
        "training time",
        "time per epoch",
        "inference throughput",
        "one-image latency",
    ):
        assert label in out, label
    assert "CNN" in out and "DENSE" in out
    assert "fewer errors" in out


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
