"""Nothing lost: atomic saves under kill -9, Ctrl-C, --resume after kill -9 (mid-epoch, and in the middle of the
backup's own write), --resume refusing other flags."""

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
import pytest
from conftest import (
    ROOT,
    SMALL_BATCH,
    SMALL_TRAIN,
    assert_one_line_error,
    data_flags,
    fit_hook,
    output_flags,
    read_until,
    run_script,
    start,
    stop_when,
)
from test_training import CNN_FLOOR

import train_dense


def stop_line(name: str) -> str:
    """The one line a run stopped by a signal (after Keras has loaded) ends with."""
    return (
        f"stopped ({name}): no file was half-written; run the same command with --resume to go on from the last "
        "finished epoch"
    )


def the_one_stop_line(stderr: str) -> str:
    """stderr's last line, checked to be the only one saying "stopped", with no traceback before it."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert sum("stopped" in line for line in stderr.splitlines()) == 1, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def run_folder(models: Path, name: str = "cnn") -> Path:
    """The one run folder (MODELS/.NAME-run-PID) that a stopped or killed run left."""
    folders = list(models.glob(f".{name}-run-*"))
    assert len(folders) == 1, folders
    return folders[0]


def backed_up(run: Path) -> tuple[int, dict[int, dict[str, float]]]:
    """What a stopped or killed run left: the number of epochs its backup holds, and the rows of its history.csv by
    epoch."""
    epochs = json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"]
    with (run / "history.csv").open(newline="") as file:
        rows = {int(row["epoch"]): {k: float(v) for k, v in row.items() if v != "NA"} for row in csv.DictReader(file)}
    return epochs, rows


def first_epoch_line(stdout: str) -> str:
    """The first "Epoch K/N" line that a run printed: where it started (or went on from)."""
    found = re.search(r"^Epoch \d+/\d+$", stdout, re.MULTILINE)
    assert found, stdout[-3000:]
    return found.group(0)


# Held a step into epoch EPOCH (1-based; the epochs before it finished and backed up), said on stdout, until a
# signal reaches the script (whose handler then raises KeyboardInterrupt in this wait) or the test kills it.
HELD_IN_EPOCH = """
class Hook(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (EPOCH, STEP):
            say(f"in epoch {EPOCH}")
            wait_until(noted_signal)
"""


def test_kill_9_during_save_keeps_previous_model(trained, tmp_path):
    """A writer of mnistlab.records killed halfway through a save leaves the previous model intact and loadable."""
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
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300)
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
    """Ctrl-C a step into epoch 3: one line, exit 130, no model or record; the backup holds epochs 1 and 2, and
    --resume goes on with epoch 3 exactly, keeping the rows written before the stop."""
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path)]
    args += data_flags()
    process = start("train_cnn.py", *args, prelude=fit_hook(HELD_IN_EPOCH, EPOCH=3, STEP=0))
    err = stop_when(process, "hook: in epoch 3", signal.SIGINT)
    assert process.returncode == 130, err[-2000:]
    assert the_one_stop_line(err) == stop_line("SIGINT")
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert not list((tmp_path / "results").glob("*.json*"))
    done, rows = backed_up(run_folder(tmp_path / "models"))
    assert done == 2 and sorted(rows) == [0, 1], (done, sorted(rows))

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first_epoch_line(resumed.stdout) == "Epoch 3/3", resumed.stdout[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[:2] == [rows[0], rows[1]]  # the rows of before the stop, timings and all: not trained again


def test_kill_9_mid_epoch_then_resume(tmp_path):
    args = ["--train-size", str(SMALL_TRAIN), "--epochs", "6", "--batch-size", str(SMALL_BATCH)]
    args += [*output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args, prelude=fit_hook(HELD_IN_EPOCH, EPOCH=3, STEP=10))
    try:
        read_until(process, "hook: in epoch 3")
    finally:
        process.kill()
        process.communicate()
    assert not (tmp_path / "models" / "cnn.keras").exists()
    run = run_folder(tmp_path / "models")
    done, rows = backed_up(run)
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
    assert not run.exists()


# Keras' BackupAndRestore writes its two files in place (weights, then the metadata): the WRITE-th write of FILE is
# cut off halfway, said on stdout, and held there until the test's kill -9.
CUT_OFF_IN_THE_BACKUP = """
import builtins, os
_open, _save_weights, _writes = builtins.open, keras.Model.save_weights, {}


def cut_off(path, data):
    with _open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    say(f"cut off {os.path.basename(path)}")
    wait_until(lambda: False)


def this_one(path):
    name = os.path.basename(str(path))
    if not str(path).endswith(f"backup/{name}") or name != FILE:
        return False
    _writes[name] = _writes.get(name, 0) + 1
    return _writes[name] == WRITE


class Metadata:  # Keras: with file_utils.File(path, "w") as f: f.write(json.dumps(metadata))
    def __init__(self, path):
        self.path = path
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def write(self, text):
        cut_off(self.path, text.encode())


def open_(path, mode="r", *args, **kwargs):
    if "w" in mode and this_one(path):
        return Metadata(path)
    return _open(path, mode, *args, **kwargs)


def save_weights(self, filepath, *args, **kwargs):
    if this_one(filepath):
        whole = str(filepath).replace("latest.weights.h5", "whole.weights.h5")
        _save_weights(self, whole, *args, **kwargs)
        with _open(whole, "rb") as handle:
            data = handle.read()
        os.remove(whole)
        cut_off(filepath, data)
    return _save_weights(self, filepath, *args, **kwargs)


builtins.open, keras.Model.save_weights = open_, save_weights


class Hook(keras.callbacks.Callback):
    pass
"""


@pytest.mark.parametrize(
    ("file", "write", "first"),
    [
        ("training_metadata.json", 2, "Epoch 2/3"),  # the .bkp pair holds epoch 1
        ("latest.weights.h5", 2, "Epoch 2/3"),
        ("training_metadata.json", 1, "Epoch 1/3"),  # no .bkp yet: it starts anew
        ("latest.weights.h5", 1, "Epoch 1/3"),
    ],
    ids=["metadata-epoch-2", "weights-epoch-2", "metadata-epoch-1", "weights-epoch-1"],
)
def test_kill_9_mid_backup_write_then_resume(tmp_path, file, write, first):
    """kill -9 while Keras writes the backup of epoch WRITE (a file cut off halfway): --resume still ends with exit
    0, going on from the last epoch whose backup is whole (Backup restores Keras' .bkp copies), or from epoch 1 when
    there is none; the history rows written before the kill stay."""
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path)]
    args += data_flags()
    process = start("train_cnn.py", *args, prelude=fit_hook(CUT_OFF_IN_THE_BACKUP, FILE=file, WRITE=write))
    try:
        read_until(process, f"hook: cut off {file}")
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    run = run_folder(tmp_path / "models")
    cut = run / "backup" / file
    assert len(cut.read_bytes()) > 0 and (cut.suffix != ".json" or not cut.read_text().endswith("}"))
    with (run / "history.csv").open(newline="") as file_:
        rows = {int(row["epoch"]): {k: float(v) for k, v in row.items() if v != "NA"} for row in csv.DictReader(file_)}
    assert sorted(rows) == list(range(write)), sorted(rows)  # CSVLogger runs before the backup

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert first_epoch_line(resumed.stdout) == first, resumed.stdout[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    kept = int(first.split()[1].split("/")[0]) - 1  # the epochs it did not train again
    assert history[:kept] == [rows[epoch] for epoch in range(kept)]
    assert keras.saving.load_model(tmp_path / "models" / "cnn.keras").count_params() == 35_338
    assert not run.exists()


def test_resume_without_a_backup_is_refused(tmp_path):
    """... before it makes any folder: not the models or results folder, not --tensorboard's."""
    logs = ["--tensorboard", str(tmp_path / "logs")]
    result = run_script("train_dense.py", "--resume", *logs, *output_flags(tmp_path), *data_flags())
    assert_one_line_error(result, 1)
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: nothing to resume in {tmp_path / 'models'}; run the command without --resume"
    )
    assert list(tmp_path.iterdir()) == []


def test_resume_with_other_flags_names_exactly_those(tmp_path, small_npz):
    """A real run of train_dense.main, stopped as its first epoch ends (a KeyboardInterrupt, as the script's signal
    handler raises), leaves its flags in .dense-run-PID/config.json; --resume with three of them changed lists
    exactly those three, before it makes --tensorboard's folder. A default given explicitly is no change, and
    --tensorboard may point elsewhere: with only those, it resumes, from epoch 2."""
    flags = ["--train-size", "1000", "--epochs", "3", "--batch-size", "64", "--seed", "3"]
    flags += [*output_flags(tmp_path), "--data", str(small_npz)]  # 2,000 test images: a quicker test at the end

    class CtrlC(keras.callbacks.Callback):  # after the script's own: epoch 1 is backed up
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("SIGINT")

    with pytest.raises(KeyboardInterrupt):
        train_dense.main(flags, callbacks=[CtrlC()])
    run = run_folder(tmp_path / "models", "dense")
    saved = json.loads((run / "config.json").read_text())
    assert (saved["epochs"], saved["seed"], saved["learning_rate"]) == (3, 3, 0.005)

    changed = ["--seed", "4", "--epochs", "4", "--learning-rate", "0.001"]
    same = ["--val-split", "0.1", "--tensorboard", str(tmp_path / "logs")]
    with pytest.raises(SystemExit) as refused:
        train_dense.main([*flags, *changed, *same, "--resume"])
    assert refused.value.code == (
        "error: --resume needs the same flags as the stopped run; these differ: --epochs, --learning-rate, --seed"
    )
    assert not (tmp_path / "models" / "dense.keras").exists()
    assert not (tmp_path / "logs").exists()  # refused before it made --tensorboard's folder

    class FirstEpoch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    seen = FirstEpoch()
    assert train_dense.main([*flags, *same, "--resume"], callbacks=[seen]) == 0
    assert seen.epochs == [1, 2]  # went on from epoch 2
    history = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert not run.exists()
