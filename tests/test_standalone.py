"""The three tutorial scripts are single files: each imports only Keras/TensorFlow, NumPy, matplotlib and the
standard library, runs when copied alone into an empty folder, and runs under Windows' rules (tests/windows_rules.py:
no POSIX-only modules, no SIGHUP, byte-range locks, and no removing or replacing a file that is held open)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, data_flags, fit_hook, read_until
from windows_rules import PRELUDE

SCRIPTS = ("train_cnn.py", "train_dense.py", "compare.py")
ALLOWED = {"keras", "tensorflow", "numpy", "matplotlib"}
SLICE = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_imports_only_the_framework_and_the_standard_library(script):
    tree = ast.parse((ROOT / script).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) <= ALLOWED, imported - set(sys.stdlib_module_names)
    assert "sys.path" not in (ROOT / script).read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_reads_as_a_tutorial_no_line_over_100_characters_and_main_at_most_40_lines(script):
    """The README's promise for each script: no line over 100 characters, and main() at most 40 lines from its `def`
    to its last line."""
    text = (ROOT / script).read_text()
    long = [(number, len(line)) for number, line in enumerate(text.splitlines(), start=1) if len(line) > 100]
    assert long == [], f"{script}: lines over 100 characters (line, length): {long}"
    main = next(node for node in ast.parse(text).body if isinstance(node, ast.FunctionDef) and node.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 40, f"{script}: main() is {main.end_lineno - main.lineno + 1} lines"


def run_alone(folder, script, *args, wrapper: str = ""):
    """Run ``folder/script`` from ``folder``, as a learner who copied it there would; ``wrapper`` is Python code
    run first, in the same process."""
    runner = f"{wrapper}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", runner, script, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_a_copy_alone(folder, wrapper: str = "") -> None:
    for script in SCRIPTS:
        shutil.copy(ROOT / script, folder)
    for script in ("train_cnn.py", "train_dense.py"):
        result = run_alone(folder, script, *SLICE, *data_flags(), wrapper=wrapper)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    result = run_alone(folder, "compare.py", *data_flags(), wrapper=wrapper)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fewer errors" in result.stdout or "fewer errors here" in result.stdout, result.stdout[-2000:]
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["cnn.keras", "dense.keras"]
    assert {"cnn_run.json", "dense_run.json", "comparison.png", "comparison.json", "runs.jsonl"} <= {
        p.name for p in (folder / "results").iterdir()
    }
    rows = json.loads((folder / "results" / "comparison.json").read_text())["models"]
    assert rows["cnn"]["test_accuracy"] > 0.9 and rows["dense"]["test_accuracy"] > 0.85, rows


def test_each_script_runs_copied_alone_into_an_empty_folder(tmp_path):
    """No mnistlab/, no other script, no sys.path: the default models/ and results/ appear beside the copies."""
    check_a_copy_alone(tmp_path)


# As on Windows (tests/windows_rules.py): no POSIX-only modules, no SIGHUP, msvcrt's byte-range locks, and a file
# that any process holds open cannot be removed, renamed or replaced.
def test_each_script_runs_under_windows_rules(tmp_path):
    """Each copy runs to exit 0 with no traceback, and leaves no lock file (check_a_copy_alone lists models/)."""
    check_a_copy_alone(tmp_path, wrapper=PRELUDE)


def test_the_windows_rules_catch_a_lock_removed_while_open(tmp_path):
    """The imitation is strict enough to see the bug it is for: removing the lock file before closing it."""
    script = (ROOT / "train_dense.py").read_text()
    before = "    try:\n        os.remove(lock.name)\n        lock.close()\n    except OSError:"
    assert before in script
    (tmp_path / "train_dense.py").write_text(script.replace(before, "    try:\n        os.remove(lock.name)\n"
                                                            "        lock.close()\n    except FileNotFoundError:"))
    result = run_alone(tmp_path, "train_dense.py", *SLICE, *data_flags(), wrapper=PRELUDE)
    assert result.returncode == 1 and "WinError 32" in result.stderr, result.stderr[-2000:]
    assert (tmp_path / "models" / ".dense.lock").exists()


def start_alone(folder, script, *args, wrapper: str = PRELUDE) -> subprocess.Popen[str]:
    """Like run_alone, in the background, with Ctrl-C handled as in a terminal."""
    runner = (
        f"{wrapper}\nimport runpy, signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", runner, script, *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


AFTER_EPOCH_1_UNTIL_A_STOP = """
class Hook(keras.callbacks.Callback):  # epoch 1 backed up: said, and held (the run holds its lock) until a Ctrl-C
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            say("epoch 1 done")
            wait_until(noted_signal)
"""


def test_two_runs_at_once_are_refused_under_windows_rules(tmp_path):
    """The second run of a script into one models folder refuses in one line naming the first run's PID, which it
    can read because the lock covers a byte far past it; the first run, stopped with Ctrl-C, then removes its lock."""
    shutil.copy(ROOT / "train_dense.py", tmp_path)
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", "32", *data_flags()]
    first = start_alone(tmp_path, "train_dense.py", *args, wrapper=f"{PRELUDE}\n{fit_hook(AFTER_EPOCH_1_UNTIL_A_STOP)}")
    try:
        read_until(first, "hook: epoch 1 done")
        second = run_alone(tmp_path, "train_dense.py", *args, wrapper=PRELUDE)
        assert first.poll() is None, first.communicate()[1][-2000:]
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 1, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: another training run of dense (PID {first.pid}) is writing to models; wait for it to finish, or "
        "give this run another --models-dir"
    ), line
    assert first.returncode == 130 and "Traceback" not in first_err, first_err[-2000:]
    assert not (tmp_path / "models" / ".dense.lock").exists()


IN_EPOCH_2_UNTIL_A_STOP = """
class Hook(keras.callbacks.Callback):  # five steps into epoch 2: said, and held until the Ctrl-C is noted
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (1, 5):
            say("in epoch 2")
            wait_until(noted_signal)
"""


def test_ctrl_c_then_resume_under_windows_rules(tmp_path):
    """Ctrl-C in epoch 2: one line, exit 130, the lock gone; --resume goes on from epoch 2 to the end."""
    shutil.copy(ROOT / "train_cnn.py", tmp_path)
    args = ["--train-size", "4000", "--epochs", "3", "--batch-size", "32", *data_flags()]
    process = start_alone(tmp_path, "train_cnn.py", *args, wrapper=f"{PRELUDE}\n{fit_hook(IN_EPOCH_2_UNTIL_A_STOP)}")
    try:
        read_until(process, "hook: in epoch 2")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted in epoch 2 of 3: nothing was half-written; "), line
    assert line.endswith("run the same command with --resume to go on from epoch 2"), line
    assert not (tmp_path / "models" / ".cnn.lock").exists()
    resumed = run_alone(tmp_path, "train_cnn.py", *args, "--resume", wrapper=PRELUDE)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cnn.keras"]


# A reader (the page, serve.py) holding files open, and the run it reads, in step: each waits for the other's file in
# ``meet``, so that each look happens where it must at any machine speed.
HOLD_OPEN = textwrap.dedent("""
    import pathlib, sys, time
    backup, models, meet = map(pathlib.Path, sys.argv[1:4])
    deadline = time.monotonic() + 300
    def wait_for(path):
        while not path.exists():
            assert time.monotonic() < deadline, path
            time.sleep(0.01)
    wait_for(meet / "epoch-1-saved")
    first = open(backup / "epoch-1.keras", "rb")  # the page, reading epoch 1 ...
    model = open(models / "dense.keras", "rb")  # ... and serve.py, the model of the run before
    (meet / "holding").touch()
    wait_for(meet / "epoch-3-saved")
    print("newest", sorted(p.name for p in backup.glob("epoch-*.keras")), flush=True)
    (meet / "looked").touch()
    wait_for(meet / "model-replace-refused")  # the new model waits for this reader to let go of the old one
    model.close()
    first.close()
""")
READ_WHILE_TRAINING = """
MEET = pathlib.Path(MEET)


class Hook(keras.callbacks.Callback):  # after epochs 1 and 3, their files in place: held until the reader has done
    def on_epoch_end(self, epoch, logs=None):
        if epoch in (0, 2):
            (MEET / f"epoch-{epoch + 1}-saved").touch()
            wait_until((MEET / ("holding" if epoch == 0 else "looked")).exists)


import os
_replace = os.replace  # Windows' rules: refused while a reader holds the file
def replace(src, dst, **kwargs):
    try:
        return _replace(src, dst, **kwargs)
    except PermissionError:
        if os.path.basename(dst) == "dense.keras":
            (MEET / "model-replace-refused").touch()
        raise
os.replace = replace
"""


def test_training_goes_on_while_a_reader_holds_its_files_open(tmp_path):
    """Under Windows' rules a reader that holds epoch-1.keras and the previous models/dense.keras open cannot stop
    training: the run goes on (epoch 1's file stays until it is let go), the newest epoch file is whole, and the
    new model replaces the old one once the reader closes it. Nothing is left behind."""
    shutil.copy(ROOT / "train_dense.py", tmp_path)
    first = run_alone(tmp_path, "train_dense.py", *SLICE, *data_flags(), wrapper=PRELUDE)
    assert first.returncode == 0, first.stderr[-2000:]
    old_model = (tmp_path / "models" / "dense.keras").read_bytes()
    backup = tmp_path / "models" / ".resume-dense"
    meet = tmp_path / "meet"
    meet.mkdir()
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(backup), str(tmp_path / "models"), str(meet)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        args = ["--train-size", "3000", "--epochs", "4", "--batch-size", "64", "--seed", "2", *data_flags()]
        wrapper = f"{PRELUDE}\n{fit_hook(READ_WHILE_TRAINING, MEET=str(meet))}"
        result = run_alone(tmp_path, "train_dense.py", *args, wrapper=wrapper)
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "newest ['epoch-1.keras', 'epoch-3.keras']" in out, out  # epoch 2's went as epoch 3's came
    assert (tmp_path / "models" / "dense.keras").read_bytes() != old_model
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dense.keras"]
    rows = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert len(rows) == 4
