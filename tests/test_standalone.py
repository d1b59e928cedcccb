"""The three tutorial scripts are single files: each imports only Keras/TensorFlow, NumPy, matplotlib and the
standard library (and calls no TensorFlow of its own: pure Keras 3), runs when copied alone into an empty folder, and
runs under Windows' rules (tests/windows_rules.py: no POSIX-only modules, no SIGHUP, and no removing or replacing a
file that is held open)."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import keras
import pytest
from conftest import ROOT, assert_one_line_error, data_flags, fit_hook, read_until
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
def test_pure_keras_no_tensorflow_of_its_own(script):
    """No `tf.` call and no TensorFlow import: the scripts run on any Keras backend (a JAX run of each training
    script: tests/test_training.py)."""
    text = (ROOT / script).read_text()
    tree = ast.parse(text)
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert not [name for name in imported if name.split(".")[0] == "tensorflow"], imported
    assert "import tensorflow" not in text
    calls = [number for number, line in enumerate(text.splitlines(), start=1) if re.search(r"\btf\.", line)]
    assert calls == [], f"{script}: tf. on lines {calls}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_line_over_100_characters(script):
    """The README's promise for each script: no line over 100 characters."""
    text = (ROOT / script).read_text()
    long = [(number, len(line)) for number, line in enumerate(text.splitlines(), start=1) if len(line) > 100]
    assert long == [], f"{script}: lines over 100 characters (line, length): {long}"


# What main() does, in the order a reader meets it: flags, data, the network, compile, fit, test, save.
TUTORIAL_ORDER = ("parse_args", "load_data", "build_model", "compile", "fit", "evaluate", "save")


@pytest.mark.parametrize("script", ["train_cnn.py", "train_dense.py"])
def test_main_reads_top_to_bottom(script):
    """Each training script's main() reads as a keras-io example: the first call of each step comes after the step
    before it, and each step is called in main() itself (not hidden in a helper)."""
    tree = ast.parse((ROOT / script).read_text())
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    names = [  # every name main() calls, or names as a function to call (cnn: build_best_model or build_model)
        (node.lineno, node.col_offset, node.id if isinstance(node, ast.Name) else node.attr)
        for node in ast.walk(main)
        if isinstance(node, (ast.Name, ast.Attribute))
    ]
    first = {}
    for line, column, name in sorted(names):
        first.setdefault(name, (line, column))
    missing = [step for step in TUTORIAL_ORDER if step not in first]
    assert missing == [], f"{script}: main() never calls {missing}"
    order = sorted(TUTORIAL_ORDER, key=first.get)
    assert order == list(TUTORIAL_ORDER), f"{script}: main() calls them in the order {order}"


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


# Two runs of one script into one models folder, under Windows' rules, made to overlap: each, its first epoch done,
# waits until the other's is too; then the second ("later") holds its final save until the first has saved all.
TWO_AT_ONCE = """
MEET, RUNS = pathlib.Path(MEET), pathlib.Path(RUNS)


class Hook(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            (MEET / ROLE).touch()
            wait_until(lambda: len(list(MEET.iterdir())) == 2)  # both are training, side by side
    def on_train_end(self, logs=None):
        if ROLE == "later":
            wait_until(lambda: RUNS.exists() and len(RUNS.read_text().splitlines()) == 1)  # the first has saved
"""


def test_two_runs_at_once_under_windows_rules_both_end_with_whole_files(tmp_path):
    """No lock any more: two runs into one folder, training at the same time, both end with exit 0 and no
    traceback; the later save wins (its model, with the augmentation layer that only it asked for, and its record),
    every file is whole, runs.jsonl has both runs, and neither leaves its run folder or a temp file behind."""
    shutil.copy(ROOT / "train_dense.py", tmp_path)
    meet = tmp_path / "meet"
    meet.mkdir()
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *data_flags()]
    runs = {}
    try:
        for role, extra in (("first", ["--seed", "1"]), ("later", ["--seed", "2", "--augment"])):
            hook = fit_hook(TWO_AT_ONCE, MEET=str(meet), RUNS=str(tmp_path / "results" / "runs.jsonl"), ROLE=role)
            runs[role] = start_alone(tmp_path, "train_dense.py", *args, *extra, wrapper=f"{PRELUDE}\n{hook}")
        outputs = {role: run.communicate(timeout=600) for role, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()
    for role, run in runs.items():
        assert run.returncode == 0 and "Traceback" not in outputs[role][1], (role, outputs[role][1][-3000:])
    assert sorted(p.name for p in meet.iterdir()) == ["first", "later"]  # both came to the end of epoch 1
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dense.keras"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "dense_history.json", "dense_run.json", "runs.jsonl"
    ]  # fmt: skip
    lines = (tmp_path / "results" / "runs.jsonl").read_text().splitlines()
    assert [(json.loads(line)["seed"], json.loads(line)["augment"]) for line in lines] == [(1, False), (2, True)]
    assert json.loads((tmp_path / "results" / "dense_run.json").read_text()) == json.loads(lines[1])
    history = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1]
    model = keras.saving.load_model(tmp_path / "models" / "dense.keras", safe_mode=True)
    assert "augmentation" in [layer.name for layer in model.layers]  # the later run's network


IN_EPOCH_2_UNTIL_A_STOP = """
class Hook(keras.callbacks.Callback):  # five steps into epoch 2: said, and held there until the Ctrl-C arrives
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (1, 5):
            say("in epoch 2")
            wait_until(noted_signal)  # the stop is noted: the script raises it as this step ends
"""


def test_ctrl_c_then_resume_under_windows_rules(tmp_path):
    """Ctrl-C in epoch 2: one line, exit 130; --resume goes on from epoch 2 (epoch 1 is not trained again) to the
    end, and removes the run folder it went on with."""
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
    assert err.strip().splitlines()[-1] == (
        "stopped (SIGINT): no file was half-written; run the same command with --resume to go on from the last "
        "finished epoch"
    ), err[-2000:]
    assert not (tmp_path / "models" / "cnn.keras").exists()
    folders = [p.name for p in (tmp_path / "models").iterdir()]
    assert len(folders) == 1 and folders[0].startswith(f".cnn-run-{process.pid}-"), folders  # for --resume
    resumed = run_alone(tmp_path, "train_cnn.py", *args, "--resume", wrapper=PRELUDE)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    epochs = re.findall(r"^Epoch (\d+)/3$", resumed.stdout, flags=re.MULTILINE)
    assert epochs == ["2", "3"], resumed.stdout[-3000:]  # on from epoch 2
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cnn.keras"]


# A reader (the page, serve.py) holding files open, and the run it reads, in step: each waits for the other's file in
# ``meet``, so that each look happens where it must at any machine speed.
HOLD_OPEN = textwrap.dedent("""
    import pathlib, sys, time
    models, meet, let_go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    deadline = time.monotonic() + 300
    def wait_for(path):
        while not path.exists():
            assert time.monotonic() < deadline, path
            time.sleep(0.01)
    wait_for(meet / "epoch-1-saved")
    run = pathlib.Path((meet / "run-folder").read_text())
    first = open(run / "epoch-1.keras", "rb")  # the page, reading epoch 1 ...
    model = open(models / "dense.keras", "rb")  # ... and serve.py, the model of the run before
    (meet / "holding").touch()
    wait_for(meet / "epoch-3-saved")
    print("epochs", sorted(p.name for p in run.glob("epoch-*.keras")), flush=True)
    (meet / "looked").touch()
    wait_for(meet / "model-replace-refused")  # the new model waits for this reader to let go of the old one
    if let_go == "after the run":
        model.close()
        wait_for(meet / "run-ended")
    first.close()
    model.close()
""")
READ_WHILE_TRAINING = """
import os
MEET = pathlib.Path(MEET)


class Hook(keras.callbacks.Callback):  # after epochs 1 and 3, their files in place: held until the reader has done
    def on_epoch_end(self, epoch, logs=None):
        if epoch in (0, 2):
            (folder,) = pathlib.Path("models").glob(f".dense-run-{os.getpid()}-*")
            (MEET / "run-folder").write_text(str(folder.resolve()))
            (MEET / f"epoch-{epoch + 1}-saved").touch()
            wait_until((MEET / ("holding" if epoch == 0 else "looked")).exists)


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


@pytest.mark.parametrize("let_go", ["before the model", "after the run"])
def test_training_goes_on_while_a_reader_holds_its_files_open(tmp_path, let_go):
    """Under Windows' rules a reader that holds epoch-1.keras and the previous models/dense.keras open cannot stop
    training: the run goes on (every epoch's file is kept until the end), and the new model replaces the old one
    once the reader closes it (the save waits for it). A reader that lets go of epoch-1.keras first leaves nothing
    behind; one that holds it until after the run leaves only that file in the run's folder (Windows cannot remove
    it), the run still ending with exit 0, and without config.json a later --resume does not take that folder."""
    shutil.copy(ROOT / "train_dense.py", tmp_path)
    first = run_alone(tmp_path, "train_dense.py", *SLICE, *data_flags(), wrapper=PRELUDE)
    assert first.returncode == 0, first.stderr[-2000:]
    old_model = (tmp_path / "models" / "dense.keras").read_bytes()
    meet = tmp_path / "meet"
    meet.mkdir()
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(tmp_path / "models"), str(meet), let_go],
        stdout=subprocess.PIPE,
        text=True,
    )
    args = ["--train-size", "3000", "--epochs", "4", "--batch-size", "64", "--seed", "2", *data_flags()]
    try:
        wrapper = f"{PRELUDE}\n{fit_hook(READ_WHILE_TRAINING, MEET=str(meet))}"
        result = run_alone(tmp_path, "train_dense.py", *args, wrapper=wrapper)
        (meet / "run-ended").touch()
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert (meet / "model-replace-refused").exists()  # the imitation refused the replace while the reader held it
    assert "epochs ['epoch-1.keras', 'epoch-2.keras', 'epoch-3.keras']" in out, out
    assert (tmp_path / "models" / "dense.keras").read_bytes() != old_model
    keras.saving.load_model(tmp_path / "models" / "dense.keras", safe_mode=True)  # whole
    rows = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert len(rows) == 4
    run = pathlib.Path((meet / "run-folder").read_text())
    if let_go == "before the model":
        assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["dense.keras"]
        return
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [run.name, "dense.keras"]
    assert [p.name for p in run.iterdir()] == ["epoch-1.keras"]
    resumed = run_alone(tmp_path, "train_dense.py", *args, "--resume", wrapper=PRELUDE)
    assert_one_line_error(resumed, 1, "nothing to resume in models; run the command without --resume")
