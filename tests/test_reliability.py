"""Nothing lost: atomic saves under kill -9, Ctrl-C, --resume after kill -9, determinism, tf.distribute (one machine;
several: tests/test_multiworker.py)."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    ROOT,
    SMALL_BATCH,
    SMALL_EPOCHS,
    SMALL_TRAIN,
    assert_one_line_error,
    data_flags,
    fit_hook,
    output_flags,
    read_until,
    run_script,
    start,
    wait_for_epochs,
)
from test_training import CNN_FLOOR, Observe, run_main

import train_cnn
import train_dense


def backed_up(backup: Path) -> tuple[int, dict[int, dict[str, float]]]:
    """What a killed run left: the number of epochs its backup holds, and the rows of its history.csv by epoch."""
    epochs = json.loads((backup / "state" / "training_metadata.json").read_text())["epoch"]
    with (backup / "history.csv").open(newline="") as file:
        rows = {int(row["epoch"]): {k: float(v) for k, v in row.items() if v != "NA"} for row in csv.DictReader(file)}
    return epochs, rows


def first_epoch_line(stdout: str) -> str:
    return re.search(r"^Epoch \d+/\d+$", stdout, re.MULTILINE).group(0)


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


MID_EPOCH_3 = """
class Hook(keras.callbacks.Callback):  # ten steps into epoch 3, epochs 1 and 2 backed up: kill -9 lands here
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (2, 10):
            say("in epoch 3")
            wait_until(lambda: False)
"""


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
    process = start("train_cnn.py", *args, prelude=fit_hook(MID_EPOCH_3))
    backup = tmp_path / "models" / ".resume-cnn"
    try:
        read_until(process, "hook: in epoch 3")
    finally:
        process.kill()
        process.communicate()
    assert not (tmp_path / "models" / "cnn.keras").exists()
    done, rows = backed_up(backup)
    assert done == 2 and sorted(rows) == [0, 1], (done, sorted(rows))  # killed mid-way through epoch 3

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == list(range(6))
    # Continued, not restarted (which would give the same list of epochs): its first epoch is the one after the
    # backup, and the rows of the epochs before the kill are those written before it, timings and all.
    assert first_epoch_line(resumed.stdout) == f"Epoch {done + 1}/6", resumed.stdout[-3000:]
    assert history[:done] == [rows[epoch] for epoch in range(done)]
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["test_accuracy"] >= CNN_FLOOR
    assert not backup.exists()


def test_resume_without_a_backup_is_refused(tmp_path):
    """... before it makes any folder: not the models or results folder, not --tensorboard's."""
    logs = ["--tensorboard", str(tmp_path / "logs")]
    result = run_script("train_dense.py", "--resume", *logs, *output_flags(tmp_path), *data_flags())
    assert_one_line_error(result, 1, "nothing to resume in", "run the command without --resume")
    assert list(tmp_path.iterdir()) == []


def test_resume_with_other_flags_names_exactly_those(tmp_path, small_npz):
    """A real run of train_dense.main, Ctrl-C'd in its second epoch, leaves its flags in .resume-dense/config.json;
    --resume with three of them changed lists exactly those three. A default given explicitly is no change, and
    --tensorboard may point elsewhere."""
    flags = ["--train-size", "1000", "--epochs", "3", "--batch-size", "64", "--seed", "3"]
    flags += [*output_flags(tmp_path), "--data", str(small_npz)]  # 2,000 test images: a quicker test at the end
    stop = train_dense.StopBetweenSteps()

    class CtrlC(keras.callbacks.Callback):  # pressed as epoch 1 ends: it lands in epoch 2's first step
        def on_epoch_end(self, epoch, logs=None):
            stop.signum = stop.signum or signal.SIGINT

    with pytest.raises(KeyboardInterrupt):
        run_main(train_dense, *flags, stop=stop, extra_callbacks=[CtrlC()])
    expected = "nothing was half-written; run the same command with --resume to go on from epoch 2"
    assert stop.message() == f"interrupted in epoch 2 of 3: {expected}"
    saved = json.loads((tmp_path / "models" / ".resume-dense" / "config.json").read_text())
    assert (saved["epochs"], saved["seed"], saved["learning_rate"]) == (3, 3, 0.005)

    changed = ["--seed", "4", "--epochs", "4", "--learning-rate", "0.001"]
    same = ["--val-split", "0.1", "--tensorboard", str(tmp_path / "logs")]
    with pytest.raises(SystemExit) as refused:
        run_main(train_dense, *flags, *changed, *same, "--resume")
    assert refused.value.code == (
        "error: --resume needs the same flags as the interrupted run; these differ: --epochs, --learning-rate, --seed"
    )
    assert not (tmp_path / "models" / "dense.keras").exists()
    assert not (tmp_path / "logs").exists()  # refused before it made --tensorboard's folder


def test_deterministic_same_seed_same_history_another_seed_another(tmp_path, small_npz):
    """--deterministic turns TensorFlow's op determinism on for the run; the same --seed then gives the same weights
    and the same history, and another seed other weights and another history."""
    runs = {}
    for attempt, seed in (("a", 7), ("b", 7), ("c", 8)):
        seen = Observe()
        argv = ["--deterministic", "--seed", str(seed), "--train-size", "1000", "--epochs", "2"]
        argv += ["--batch-size", str(SMALL_BATCH), *output_flags(tmp_path / attempt), "--data", str(small_npz)]
        assert run_main(train_cnn, *argv, extra_callbacks=[seen]) == 0
        assert seen.determinism is True, attempt  # on while it trains (run_main turned it off before)
        epochs = json.loads((tmp_path / attempt / "results" / "cnn_history.json").read_text())["epochs"]
        runs[attempt] = (seen.weights, [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in epochs])
    np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1] and runs["a"][1][0]["loss"] > 0
    assert not np.allclose(runs["a"][0], runs["c"][0])
    assert [row["loss"] for row in runs["a"][1]] != [row["loss"] for row in runs["c"][1]]


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
    assert f"batch {SMALL_BATCH} over all devices" in result.stdout
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert record["replicas"] == 2 and record["global_batch_size"] == SMALL_BATCH
    assert record["test_accuracy"] >= CNN_FLOOR
