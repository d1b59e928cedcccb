"""Nothing lost: atomic saves under kill -9, Ctrl-C, --resume after kill -9, determinism, tf.distribute (one machine;
several: tests/test_multiworker.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
from conftest import (
    ROOT,
    SMALL_BATCH,
    SMALL_EPOCHS,
    SMALL_TRAIN,
    assert_one_line_error,
    data_flags,
    output_flags,
    run_script,
    start,
    wait_for_epochs,
)
from test_training import CNN_FLOOR


def test_kill_9_during_save_keeps_previous_model(trained, tmp_path):
    """A writer killed halfway through a save leaves the previous model intact and loadable."""
    target = tmp_path / "cnn.keras"
    target.write_bytes((trained["models"] / "cnn.keras").read_bytes())
    before = target.read_bytes()
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from mnistlab import records

        class DiesWhileSaving:
            def save(self, path):
                with open(path, "wb") as handle:
                    handle.write(b"PK half a model")
                    handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

        records.save_model(DiesWhileSaving(), {str(target)!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == -signal.SIGKILL
    assert target.read_bytes() == before
    assert keras.saving.load_model(target, safe_mode=True).count_params() > 0
    debris = list(tmp_path.glob(".cnn.tmp-*"))
    assert len(debris) == 1  # what kill -9 leaves: a hidden temp, never the model itself
    from mnistlab import records

    records.write_json(tmp_path / "cnn.json", {"ok": True})
    records.save_model(keras.saving.load_model(target), target)
    assert not list(tmp_path.glob(".cnn.tmp-*")), "the next save cleans up after the killed writer"


def test_ctrl_c_ends_cleanly(tmp_path):
    args = ["--train-size", "6000", "--epochs", "30", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args)
    wait_for_epochs(tmp_path / "models" / ".resume-cnn", 1, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"interrupted (in epoch \d+|after epoch \d+) of 30: nothing was half-written; run the same command with "
        r"--resume to go on from epoch \d+",
        line,
    ), line
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert not list((tmp_path / "results").glob("*.json"))


def test_kill_9_mid_epoch_then_resume(tmp_path):
    args = [
        "--train-size",
        str(SMALL_TRAIN),
        "--epochs",
        "6",
        "--batch-size",
        str(SMALL_BATCH),
        *output_flags(tmp_path),
        *data_flags(),
    ]
    process = start("train_cnn.py", *args)
    backup = tmp_path / "models" / ".resume-cnn"
    wait_for_epochs(backup, 2, process)
    time.sleep(0.4)  # into the next epoch
    process.kill()
    process.communicate()
    assert not (tmp_path / "models" / "cnn.keras").exists()

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(6))
    assert "Epoch 1/6" not in resumed.stdout  # continued, not restarted
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["test_accuracy"] >= CNN_FLOOR
    assert not backup.exists()


def test_resume_without_a_backup_is_refused(tmp_path):
    result = run_script("train_dense.py", "--resume", *output_flags(tmp_path), *data_flags())
    assert_one_line_error(result, 1, "nothing to resume in", "run the command without --resume")


def test_resume_with_other_flags_is_refused(tmp_path):
    backup = tmp_path / "models" / ".resume-dense"
    backup.mkdir(parents=True)
    (backup / "config.json").write_text(json.dumps({"epochs": 3}))
    result = run_script("train_dense.py", "--resume", "--epochs", "4", *output_flags(tmp_path), *data_flags())
    assert_one_line_error(result, 1, "--resume needs the same flags as the interrupted run; these differ: ", "--epochs")


def test_deterministic_runs_give_identical_histories(tmp_path):
    histories = []
    for attempt in ("a", "b"):
        folder = tmp_path / attempt
        result = run_script(
            "train_cnn.py",
            "--deterministic",
            "--seed",
            "7",
            "--train-size",
            "3000",
            "--epochs",
            "2",
            "--batch-size",
            str(SMALL_BATCH),
            *output_flags(folder),
            *data_flags(),
        )
        assert result.returncode == 0, result.stderr[-3000:]
        epochs = json.loads((folder / "results" / "cnn_history.json").read_text())["epochs"]
        histories.append([{k: v for k, v in row.items() if k != "epoch_seconds"} for row in epochs])
    assert histories[0] == histories[1]
    assert histories[0][0]["loss"] > 0


def test_mirrored_over_two_cpu_devices_reaches_the_same_floor(tmp_path):
    result = run_script(
        "train_cnn.py",
        "--distribute",
        "mirrored",  # two logical CPU devices on a machine without a GPU
        "--train-size",
        str(SMALL_TRAIN),
        "--epochs",
        str(SMALL_EPOCHS),
        "--batch-size",
        str(SMALL_BATCH // 2),
        *output_flags(tmp_path),
        *data_flags(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"global batch {SMALL_BATCH} (2 replica(s))" in result.stdout
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["replicas"] == 2 and record["global_batch_size"] == SMALL_BATCH
    assert record["test_accuracy"] >= CNN_FLOOR
