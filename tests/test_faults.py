"""Bad conditions on a learner's laptop: two runs at once, a full disk, Ctrl-C, SIGTERM, SIGHUP. One clear line,
nothing lost."""

from __future__ import annotations

import json
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
from conftest import AS_IN_A_TERMINAL, ROOT, SMALL_BATCH, data_flags, output_flags, run_script, start, wait_for_epochs

QUICK = ["--train-size", "3000", "--epochs", "2", "--batch-size", str(SMALL_BATCH), *data_flags()]


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


def run_with(patch: str, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a script as its own program (``__main__``), after ``patch`` (Python code) has broken something."""
    runner = "\n".join(
        [
            "import builtins, errno, json, os, runpy, shutil, sys",
            "import keras",
            textwrap.dedent(patch),
            f"sys.argv = [{str(ROOT / script)!r}, *{list(args)!r}]",
            f"runpy.run_path({str(ROOT / script)!r}, run_name='__main__')",
        ]
    )
    return subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, check=False, timeout=600)


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
    assert line.endswith("wait for it to finish, or give this run another --models-dir"), line
    assert keras.saving.load_model(tmp_path / "models" / "dense.keras").count_params() > 0
    log = (tmp_path / "results" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(row)["name"] for row in log] == ["dense"]
    assert leftovers(tmp_path / "models", tmp_path / "results") == []
    assert not (tmp_path / "models" / ".resume-dense").exists()


def test_runs_finishing_together_write_whole_log_lines(tmp_path):
    """Eight processes save 40 large records each, appending to one runs.jsonl at once, through the training
    script's own save_all: every line is one whole record."""
    writer = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import train_cnn
        for index in range(40):
            record = {{"writer": sys.argv[1], "index": index, "pad": "x" * 20000}}
            path = {str(tmp_path / "record")!r} + sys.argv[1] + ".json"
            train_cnn.save_all({{path: record}}, {str(tmp_path)!r})
    """)
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(n)]) for n in range(8)]
    assert [process.wait(timeout=300) for process in writers] == [0] * 8
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(rows) == 320
    assert sorted((row["writer"], row["index"]) for row in rows) == [(str(w), i) for w in range(8) for i in range(40)]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("backup", ["whole", "cut off mid-write"])
def test_kill_9_leaves_a_stale_lock_and_resume_takes_over(tmp_path, backup):
    args = ["--train-size", "3000", "--epochs", "4", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args)
    state = tmp_path / "models" / ".resume-cnn"
    wait_for_epochs(state, 1, process)
    process.kill()
    process.communicate()
    lock = tmp_path / "models" / ".cnn.lock"
    assert lock.read_text().strip() == str(process.pid)  # kill -9 leaves the file, but not the OS's lock
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


def test_kill_9_while_the_model_is_saved_keeps_the_previous_one(trained, tmp_path):
    """The training script is killed halfway through writing its new model: the previous model and records stay
    whole, and what is left is one hidden temp file, never a half model under the model's name."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir()}
    patch = """
        epoch_save = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if os.path.basename(filepath).startswith(".tmp-epoch-"):  # the network after an epoch: as it is
                return epoch_save(self, filepath, *args, **kwargs)
            with open(filepath, "wb") as handle:  # the model itself: killed halfway
                handle.write(b"PK half a model")
            os.kill(os.getpid(), 9)
        keras.Model.save = save
    """
    result = run_with(patch, "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    after = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir() if p.is_file()}
    assert {name: after.get(name) for name in before} == before
    assert keras.saving.load_model(models / "cnn.keras", safe_mode=True).count_params() > 0
    debris = [p.name for p in models.iterdir() if p.is_file() and p.name not in before and p.name != ".cnn.lock"]
    assert len(debris) == 1 and re.fullmatch(r"\.tmp-\d+-cnn\.keras", debris[0]), debris


# --- a full disk -------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), where this machine lets us mount one (as root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); "
            "test_little_free_space_is_refused_before_training checks the same refusal without one"
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
    assert "Epoch 1/" not in result.stdout  # refused before training, not after it
    assert previous.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["cnn.keras"]


@pytest.mark.parametrize("folder", ["--models-dir", "--results-dir"])
def test_little_free_space_is_refused_before_training(trained, tmp_path, folder):
    """Any OS, no privileges: the disk that holds one folder reports 2 MiB free (shutil.disk_usage, which the script
    asks); the script refuses in one line naming that folder and its flag, and writes nothing."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    small = str(models if folder == "--models-dir" else results)
    patch = f"""
        real = shutil.disk_usage
        def disk_usage(path):
            usage = real(path)
            return usage._replace(free=2 * 2**20) if os.path.abspath(path) == {small!r} else usage
        shutil.disk_usage = disk_usage
    """
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    result = run_with(patch, "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]
    line = last_error_line(result.stderr)
    assert line.startswith(f"error: not enough disk space: {small} has 2.0 MiB free, but this run writes about "), line
    assert line.endswith(f"MiB there; free some space or choose another {folder}"), line
    assert "Epoch 1/" not in result.stdout
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before
    assert not results.exists() or list(results.iterdir()) == []


# Each site where a training run writes, made to fail with ENOSPC (or EROFS) in a real training process.
FAULTS = {
    "backup config": """
        def dump(obj, handle, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", handle.name)
        json.dump = dump
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
    "epoch file": """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if os.path.basename(filepath).startswith(".tmp-epoch-"):  # the network after an epoch: half written
                with open(filepath, "wb") as handle:
                    handle.write(b"PK half a model")
                raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
            original(self, filepath, *args, **kwargs)
        keras.Model.save = save
    """,
    "model": """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            original(self, filepath, *args, **kwargs)
            if not os.path.basename(filepath).startswith(".tmp-epoch-"):  # the model itself
                raise OSError(errno.ENOSPC, "No space left on device")
        keras.Model.save = save
    """,
    "record": """
        real_open = builtins.open
        def half_open(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            if str(path).endswith("-cnn_run.json") and "w" in mode:
                handle.write("{half a record")
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return handle
        builtins.open = half_open
    """,
    "run log": """
        real_open = builtins.open
        class HalfWritten:  # the disk fills after the first 100 bytes of the line
            def __init__(self, handle):
                self.handle = handle
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self.handle.close()
            def __getattr__(self, name):
                return getattr(self.handle, name)
            def write(self, data):
                self.handle.write(data[:100])
                self.handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
        def half_open(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            return HalfWritten(handle) if str(path).endswith("runs.jsonl") and "a" in mode else handle
        builtins.open = half_open
    """,
    "read-only": """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if os.path.basename(filepath).startswith(".tmp-epoch-"):  # the network after an epoch: as it is
                return original(self, filepath, *args, **kwargs)
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
    result = run_with(FAULTS[site], "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    line = last_error_line(result.stderr)
    reason = "is read-only (Read-only file system)" if site == "read-only" else "is full (No space left on device)"
    assert line.startswith("error: ") and reason in line and "run the same command again" in line, line
    assert str(models) in line or str(results) in line or "output folders" in line, line
    after = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir() if p.is_file()}
    assert {name: after.get(name) for name in before} == before  # the previous model and records, intact
    assert leftovers(models, results, models / ".resume-cnn") == []  # no half file, in the run's folder either
    if site == "epoch file":  # the half-written network is gone, and none stands under an epoch file's name
        assert not list((models / ".resume-cnn").glob("epoch-*.keras"))
    for line in (results / "runs.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only


# --- Ctrl-C, SIGTERM, SIGHUP ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stop", "words"), [(signal.SIGTERM, "stopped (SIGTERM)"), (signal.SIGHUP, "stopped (SIGHUP)")], ids=["TERM", "HUP"]
)
def test_sigterm_and_sighup_stop_like_ctrl_c_and_resume_goes_on(tmp_path, stop, words):
    """SIGTERM (`timeout`, `docker stop`) and SIGHUP (the terminal closes): one line naming the epoch and --resume,
    exit 128 + the signal's number; --resume then goes on from the next epoch."""
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args)
    wait_for_epochs(tmp_path / "models" / ".resume-cnn", 1, process)
    process.send_signal(stop)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + stop, err[-2000:]
    line = last_error_line(err)
    # Mid-way through epoch 2, or just after epoch 1 if the signal lands between the two; epoch 1 is backed up.
    assert re.match(rf"{re.escape(words)} (in epoch 2|after epoch 1) of 3: nothing was half-written; ", line), line
    assert line.endswith("run the same command with --resume to go on from epoch 2"), line
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert leftovers(tmp_path / "models", tmp_path / "results") == []

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch 1/3" not in resumed.stdout and "Epoch 3/3" in resumed.stdout
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]


def test_a_stop_that_nohup_ignores_stays_ignored(tmp_path):
    """Under `nohup`, SIGHUP is ignored on purpose: the script keeps it so, and the run finishes."""
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *output_flags(tmp_path), *data_flags()]
    process = subprocess.Popen(
        ["nohup", sys.executable, str(ROOT / "train_dense.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_epochs(tmp_path / "models" / ".resume-dense", 1, process)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert (tmp_path / "models" / "dense.keras").is_file()


@pytest.mark.parametrize("script", ["train_cnn.py", "compare.py"])
def test_sigterm_while_tensorflow_is_still_importing(tmp_path, script):
    process = start(script, *output_flags(tmp_path))
    time.sleep(1.0)  # Python and the script's first lines are in; TensorFlow's import takes seconds more
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert last_error_line(err) == "stopped (SIGTERM) while starting: nothing was written; run the same command again"
    assert not (tmp_path / "models").exists() and not (tmp_path / "results").exists()


def test_sigterm_before_the_first_backup_says_to_start_again(tmp_path):
    args = ["--train-size", "8000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args)
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
    process = start("compare.py", "--models-dir", str(trained["models"]), "--results-dir", str(results), *data_flags())
    for line in process.stdout:  # stop it mid-way: after the first model is evaluated, before the report
        if line.startswith("cnn: evaluated"):
            break
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert last_error_line(err) == "stopped (SIGTERM): nothing was half-written; run the same command again"
    assert not (results / "comparison.json").exists() and not (results / "comparison.png").exists()
    assert leftovers(results) == []


def test_ctrl_c_reaches_a_child_started_as_in_a_terminal(tmp_path):
    """The suite's own way to start a script: under a parent that ignores SIGINT (like `make test &`), a plain child
    inherits the ignored SIGINT, and a child started through AS_IN_A_TERMINAL gets Python's own handler back."""
    probe = tmp_path / "probe.py"
    probe.write_text("import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    for runner, expected in (([], "False"), (["-c", AS_IN_A_TERMINAL], "True")):
        command = [sys.executable, *runner, str(probe)]
        parent = f"import signal, subprocess as s; signal.signal(signal.SIGINT, signal.SIG_IGN); s.run({command!r})"
        result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=False)
        assert result.stdout.strip() == expected, (runner, result.stdout, result.stderr)
