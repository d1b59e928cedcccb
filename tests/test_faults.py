"""Bad conditions on a learner's laptop: two runs at once, a full disk, SIGTERM. One clear line, nothing lost."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import pytest
from conftest import ROOT, SMALL_BATCH, output_flags, run_script
from test_reliability import start, wait_for_epochs

QUICK = ["--train-size", "3000", "--epochs", "2", "--batch-size", str(SMALL_BATCH)]


def last_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Segmentation fault" not in stderr
    return stderr.strip().splitlines()[-1]


def leftovers(*folders: Path) -> list[str]:
    """Temp files and lock files that a clean exit must not leave behind."""
    return [
        p.name
        for folder in folders
        if folder.exists()
        for p in folder.iterdir()
        if ".tmp-" in p.name or p.name.endswith(".lock")
    ]


# --- two runs at once ------------------------------------------------------------------------------------------
def test_two_runs_of_one_script_into_one_folder(tmp_path):
    """Started together: one trains, the other refuses at start naming it; nothing of the first is touched."""
    processes = [start("train_dense.py", *QUICK, "--seed", str(seed), *output_flags(tmp_path)) for seed in (1, 2)]
    results = [(process.wait(timeout=600), *process.communicate()) for process in processes]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], [(code, err[-1500:]) for code, _, err in results]
    refused = next(err for code, _, err in results if code == 1)
    line = last_error_line(refused)
    assert re.match(r"error: another training run of dense \(PID \d+\) is writing to ", line), line
    assert "--models-dir" in line, line
    assert keras.saving.load_model(tmp_path / "models" / "dense.keras").count_params() > 0
    log = (tmp_path / "results" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(row)["name"] for row in log] == ["dense"]
    assert leftovers(tmp_path / "models", tmp_path / "results") == []
    assert not (tmp_path / "models" / ".resume-dense").exists()


def test_runs_finishing_together_write_whole_log_lines(tmp_path):
    """Eight processes append 40 large records each to one runs.jsonl at once: every line is one whole record."""
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from mnistlab import records
        for index in range(40):
            records.append_run_log({str(tmp_path)!r}, {{"writer": sys.argv[1], "index": index, "pad": "x" * 20000}})
    """)
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(n)]) for n in range(8)]
    assert [process.wait(timeout=120) for process in writers] == [0] * 8
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 320
    assert sorted((row["writer"], row["index"]) for row in rows) == [(str(w), i) for w in range(8) for i in range(40)]


@pytest.mark.parametrize("backup", ["whole", "cut off mid-write"])
def test_kill_9_leaves_a_stale_lock_and_resume_takes_over(tmp_path, backup):
    args = ["--train-size", "3000", "--epochs", "4", "--batch-size", "32", *output_flags(tmp_path)]
    process = start("train_cnn.py", *args)
    state = tmp_path / "models" / ".resume-cnn"
    wait_for_epochs(state, 1, process)
    process.kill()
    process.communicate()
    lock = tmp_path / "models" / ".cnn.lock"
    assert lock.read_text().strip() == str(process.pid)  # kill -9 leaves the file, but not the kernel's lock
    if backup == "cut off mid-write":  # what kill -9 during the first save leaves: half a file, none before it
        weights = state / "state" / "latest.weights.h5"
        weights.write_bytes(weights.read_bytes()[:1000])
        for earlier in (state / "state").glob("*.bkp"):  # Keras keeps the checkpoint before as *.bkp
            earlier.unlink()
    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ("starting over" in resumed.stdout) == (backup == "cut off mid-write"), resumed.stdout[-2000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert not lock.exists()


# --- a full disk -------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where this machine lets us mount one (root in CI)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); the in-process tests cover it"
        )
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_is_refused_before_training(trained, tiny_disk, tmp_path):
    previous = tiny_disk / "cnn.keras"
    shutil.copy(trained["models"] / "cnn.keras", previous)
    before = previous.read_bytes()
    result = run_script(
        "train_cnn.py", *QUICK, "--models-dir", str(tiny_disk), "--results-dir", str(tmp_path / "results")
    )
    assert result.returncode == 1
    line = last_error_line(result.stderr)
    assert line.startswith(f"error: not enough disk space: {tiny_disk} has ") and "MiB free" in line, line
    assert "this run writes about" in line and "--models-dir" in line, line
    assert "Epoch 1/" not in result.stdout  # refused in the first seconds, not after training
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["cnn.keras"]


# Each site where a training run writes, made to fail with ENOSPC in a real training process.
FAULTS = {
    "backup config": """
        original = pathlib.Path.write_text
        def write_text(self, *args, **kwargs):
            if self.name == "config.json":
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return original(self, *args, **kwargs)
        pathlib.Path.write_text = write_text
    """,
    "history": """
        def on_epoch_end(self, epoch, logs=None):
            raise OSError(errno.ENOSPC, "No space left on device")
        keras.callbacks.CSVLogger.on_epoch_end = on_epoch_end
    """,
    "backup": """
        def save_weights(self, filepath, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        keras.Model.save_weights = save_weights
    """,
    "h5py backup": """
        def save_weights(self, filepath, *args, **kwargs):  # how h5py words it: the errno only in the text
            raise OSError("Can't write data (file write failed: time = now, filename = 'x', file descriptor = 7, "
                          "errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 9)")
        keras.Model.save_weights = save_weights
    """,
    "model": """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            original(self, filepath, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        keras.Model.save = save
    """,
    "record": """
        original = pathlib.Path.write_text
        def write_text(self, *args, **kwargs):
            if self.name.startswith(".cnn_run.tmp-"):
                original(self, "{half a record")
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(self, *args, **kwargs)
        pathlib.Path.write_text = write_text
    """,
    "run log": """
        original = os.write
        def write(descriptor, data):
            if b'"test_accuracy"' in bytes(data):
                original(descriptor, bytes(data)[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(descriptor, data)
        os.write = write
    """,
    "read-only": """
        def save(self, filepath, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(filepath))
        keras.Model.save = save
    """,
}


@pytest.mark.parametrize("site", list(FAULTS))
def test_no_room_at_each_write_site(site, trained, tmp_path):
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir()}
    runner = "\n".join(
        [
            "import errno, os, pathlib, sys",
            f"sys.path.insert(0, {str(ROOT)!r})",
            "import keras",
            textwrap.dedent(FAULTS[site]),
            "import train_cnn",
            "from mnistlab import cli",
            f"sys.exit(cli.run(train_cnn.main, {[*QUICK, *output_flags(tmp_path)]!r}))",
        ]
    )
    result = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    line = last_error_line(result.stderr)
    reason = "is read-only (Read-only file system)" if site == "read-only" else "is full (No space left on device)"
    assert line.startswith("error: ") and reason in line and "run the same command again" in line, line
    assert str(models) in line or str(results) in line or "output folders" in line, line
    after = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir() if p.is_file()}
    assert {name: after.get(name) for name in before} == before  # the previous model and records, intact
    assert leftovers(models, results) == []
    for line in (results / "runs.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only


def test_no_room_in_the_data_cache_leaves_no_temp(tmp_path, monkeypatch, mnist):
    from mnistlab import data, records

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data.np, "savez", full)
    with pytest.raises(OSError) as raised:
        data.save_npz_atomically(mnist, tmp_path / "cache" / "mnist.npz")
    assert list((tmp_path / "cache").iterdir()) == []
    message = records.no_room_message(raised.value)
    assert message is not None and message.startswith(f"{tmp_path / 'cache'} is full"), message


# --- SIGTERM -------------------------------------------------------------------------------------------------------
def test_sigterm_stops_like_ctrl_c_and_resume_goes_on(tmp_path):
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path)]
    process = start("train_cnn.py", *args)
    wait_for_epochs(tmp_path / "models" / ".resume-cnn", 1, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    line = last_error_line(err)
    # Mid-way through epoch 2, or just after epoch 1 if the signal lands between the two; epoch 1 is backed up.
    assert re.match(r"stopped \(SIGTERM\) (in epoch 2|after epoch 1) of 3: nothing was half-written; ", line), line
    assert line.endswith("run the same command with --resume to go on from epoch 2"), line
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert leftovers(tmp_path / "models", tmp_path / "results") == []

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 3/3" in resumed.stdout
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]


def test_sigterm_while_tensorflow_is_still_importing(tmp_path):
    process = start("train_cnn.py", *QUICK, *output_flags(tmp_path))
    time.sleep(1.0)  # the script's first import, mnistlab.cli, is in; TensorFlow's takes seconds more
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert last_error_line(err) == "stopped (SIGTERM) while starting: nothing was written; run the same command again"
    assert not (tmp_path / "models").exists()


def test_sigterm_before_the_first_backup_says_to_start_again(tmp_path):
    args = ["--train-size", "8000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path)]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train_cnn.py"), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # "Epoch 1/3" reaches us as epoch 1 begins, not later
    )
    for line in process.stdout:
        if line.startswith("Epoch 1/3"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert not (tmp_path / "models" / ".resume-cnn" / "state" / "training_metadata.json").exists()
    line = last_error_line(err)
    expected = "nothing was half-written; no epoch was backed up yet: run the same command again"
    assert line == f"stopped (SIGTERM) in epoch 1 of 3: {expected}", line


def test_sigterm_during_compare_leaves_no_half_written_file(trained, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    process = start("compare.py", "--models-dir", str(trained["models"]), "--results-dir", str(results))
    for line in process.stdout:  # stop it mid-way: after the first model is evaluated, before the report
        if line.startswith("cnn: evaluated"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert last_error_line(err).startswith("stopped (SIGTERM): nothing was half-written; run the same command again")
    assert not (results / "comparison.json").exists() and not (results / "comparison.png").exists()
    assert leftovers(results) == []
