"""Bad conditions on a learner's laptop: two runs at once, a full disk, Ctrl-C, SIGTERM, SIGHUP, kill -9 mid-save.
One clear line, nothing half-written."""

from __future__ import annotations

import ast
import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import (
    AS_IN_A_TERMINAL,
    HOOK_TOOLS,
    ROOT,
    SMALL_BATCH,
    after_keras_loads,
    data_flags,
    fit_hook,
    output_flags,
    read_until,
    run_script,
    start,
    stop_when,
)
from test_reliability import HELD_IN_EPOCH, backed_up, first_epoch_line, run_folder, stop_line, the_one_stop_line

QUICK = ["--train-size", "3000", "--epochs", "2", "--batch-size", str(SMALL_BATCH), *data_flags()]


def last_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Segmentation fault" not in stderr
    assert "decrement id ref count" not in stderr, stderr[-3000:]
    return stderr.strip().splitlines()[-1]


def leftovers(*folders: Path) -> list[str]:
    """Temp files (the scripts' NAME.PID.tmp.keras) that a clean exit must not leave behind, in these folders and
    below them (the run folders)."""
    return [str(p) for folder in folders if folder.exists() for p in folder.rglob("*") if ".tmp" in p.name]


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


def whole_files(*folders: Path) -> dict[str, bytes]:
    """The files directly in these folders (not the run folders), each checked whole: a model loads, a JSON record
    parses, runs.jsonl is whole lines."""
    files = {}
    for folder in folders:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            if ".tmp" in path.name:  # a temp file: only its name counts (see leftovers)
                pass
            elif path.suffix == ".keras":
                assert keras.saving.load_model(path, safe_mode=True).count_params() > 0, path
            elif path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".jsonl":
                for line in path.read_text().splitlines():
                    json.loads(line)
            files[path.name] = path.read_bytes()
    return files


# --- the two training scripts differ only in their networks -----------------------------------------------------
NETWORK = {"docstring", "PRESETS", "DEFAULTS", "SHIFTS", "parse_args", "build_model", "build_best_model"}
NETWORK |= {"with_shifted_views"}  # the best preset's five views


def top_level(script: str) -> dict[str, ast.AST]:
    """A training script's top-level statements (comments dropped, its name "cnn" or "dense" read as NAME), by what
    each defines; imports and the `if __name__` blocks by their whole text."""
    text = (ROOT / script).read_text().replace("cnn", "NAME").replace("dense", "NAME")
    statements = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            key = node.name
        elif isinstance(node, ast.Assign):
            key = ast.unparse(node.targets[0])
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            key = "docstring"
        else:
            key = ast.unparse(node)
        assert key not in statements, key
        statements[key] = node
    return statements


def test_the_two_scripts_differ_only_in_the_network_and_its_settings():
    """What the tests here check on train_cnn.py (a stop, a full disk, kill -9, two runs, --resume) holds for
    train_dense.py: past the docstring, the flags and the network, every statement is the same, and in main() only
    the choice of the network, the CNN's shifted views and how each compiles (the CNN's label smoothing and averaged
    weights, for its best preset) differ."""
    cnn, dense = top_level("train_cnn.py"), top_level("train_dense.py")
    assert sorted(set(cnn) - NETWORK) == sorted(set(dense) - NETWORK)
    differ = [key for key in set(cnn) - NETWORK - {"main"} if ast.unparse(cnn[key]) != ast.unparse(dense[key])]
    assert differ == []
    cnn_main, dense_main = ([ast.unparse(s) for s in script["main"].body] for script in (cnn, dense))
    assert [s for s in cnn_main if s in dense_main] == [s for s in dense_main if s in cnn_main]
    assert [s for s in dense_main if s not in cnn_main] == [
        "model = build_model(args.augment)",
        "adam = keras.optimizers.Adam(one_cycle(args.learning_rate, steps))",
        "model.compile(optimizer=adam, loss='categorical_crossentropy', metrics=['accuracy'])",
    ]
    assert [s for s in cnn_main if s not in dense_main] == [
        "model = (build_best_model if args.preset == 'best' else build_model)(args.augment)",
        "adam = keras.optimizers.Adam(one_cycle(args.learning_rate, steps), use_ema=args.average_weights, "
        "ema_momentum=max(0.0, 1 - 5 / steps))",
        "loss = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)",
        "model.compile(optimizer=adam, loss=loss, metrics=['accuracy'])",
        "model = with_shifted_views(model) if args.shifted_views else model",
    ]
    assert {"save", "Backup", "run_folder", "StopBetweenSteps", "excepthook"} <= set(cnn)  # what is compared is there


# --- two runs at once ------------------------------------------------------------------------------------------
# Each run, after its first epoch's backup, says so (a file in MEET) and waits for the other's: both are inside
# fit() at once. Each notes its losses and its trained weights; the one with HOLD saves only once the test says so.
MEET_IN_FIT = """
import json, os
class Hook(keras.callbacks.Callback):
    losses = []
    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["loss"]))
        if epoch == 0:
            (pathlib.Path(MEET) / f"{os.getpid()}.in-fit").touch()
            say("in fit")
            wait_until(lambda: len(list(pathlib.Path(MEET).glob("*.in-fit"))) == 2)
    def on_train_end(self, logs=None):
        weights = [float(np.sum(w)) for w in self.model.get_weights()]
        trained = {"losses": self.losses, "weights": weights}
        (pathlib.Path(MEET) / f"{os.getpid()}.json").write_text(json.dumps(trained))
        if HOLD:
            say("trained; holding the save")
            wait_until((pathlib.Path(MEET) / "save").exists)
import numpy as np
"""


def test_two_runs_of_one_script_into_one_folder(tmp_path):
    """Two runs into one folder, both inside fit() at once (a handshake): both end with exit 0, each in its own run
    folder (the first to end leaves the other's alone), every file whole, runs.jsonl one whole line each, and the
    later save wins: the model, history and record are all the later run's."""
    meet = tmp_path / "meet"
    meet.mkdir()
    args = ["--train-size", "3000", "--epochs", "2", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path)]
    args += data_flags()
    processes = [
        start("train_dense.py", *args, "--seed", str(seed), prelude=fit_hook(MEET_IN_FIT, MEET=str(meet), HOLD=hold))
        for seed, hold in ((1, False), (2, True))
    ]
    first, later = processes
    models, results = tmp_path / "models", tmp_path / "results"
    try:
        for process in processes:
            read_until(process, "hook: in fit")  # each has met the other in fit()
        read_until(later, "hook: trained; holding the save")
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
        assert not list(models.glob(f".dense-run-{first.pid}-*"))  # the first removed its own run folder...
        (held,) = models.glob(f".dense-run-{later.pid}-*")
        assert json.loads((held / "backup" / "training_metadata.json").read_text())["epoch"] == 2  # ...only
        assert sorted(p.name for p in held.iterdir()) == sorted(
            ["backup", "config.json", "epoch-1.keras", "epoch-2.keras", "history.csv"]
        )
        (meet / "save").touch()
        later_out, err = later.communicate(timeout=300)
        assert later.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert "dense: test accuracy" in out and "dense: test accuracy" in later_out
    files = whole_files(models, results)
    assert sorted(files) == ["dense.keras", "dense_history.json", "dense_run.json", "runs.jsonl"]
    assert sorted(p.name for p in models.iterdir()) == ["dense.keras"]  # no run folder, no temp file
    assert [json.loads(line)["seed"] for line in (results / "runs.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((results / "dense_run.json").read_text())["seed"] == 2
    trained = {pid: json.loads((meet / f"{pid}.json").read_text()) for pid in (first.pid, later.pid)}
    history = json.loads((results / "dense_history.json").read_text())["epochs"]
    assert [row["loss"] for row in history] == pytest.approx(trained[later.pid]["losses"], rel=1e-6)
    assert trained[first.pid]["losses"] != trained[later.pid]["losses"]
    saved = [float(np.sum(w)) for w in keras.saving.load_model(models / "dense.keras").get_weights()]
    assert saved == trained[later.pid]["weights"] != trained[first.pid]["weights"]


HELD_AFTER_EPOCH_1 = """
class Hook(keras.callbacks.Callback):  # epoch 1 backed up: said, and held until the test says go
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            say("in fit")
            wait_until(pathlib.Path(GO).exists)
"""


def test_a_run_stopped_while_another_runs_resumes_from_its_own_last_epoch(tmp_path):
    """Run A is stopped (SIGTERM) in its epoch 3 while run B trains into the same folder; B then ends (exit 0) and
    removes only its own run folder: A's backup is whole, and --resume goes on with A's epoch 3 exactly."""
    flags = ["--train-size", "3000", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path), *data_flags()]
    a_args, b_args = [*flags, "--epochs", "4"], [*flags, "--epochs", "2", "--seed", "2"]
    go = tmp_path / "go"
    a = start("train_cnn.py", *a_args, prelude=fit_hook(HELD_IN_EPOCH, EPOCH=3, STEP=0))
    b = start("train_cnn.py", *b_args, prelude=fit_hook(HELD_AFTER_EPOCH_1, GO=str(go)))
    models = tmp_path / "models"
    try:
        read_until(a, "hook: in epoch 3")
        read_until(b, "hook: in fit")
        a.send_signal(signal.SIGTERM)
        _, a_err = a.communicate(timeout=120)
        go.touch()
        _, b_err = b.communicate(timeout=300)
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert a.returncode == 143, a_err[-3000:]
    assert the_one_stop_line(a_err) == stop_line("SIGTERM")
    assert b.returncode == 0, b_err[-3000:]
    run = run_folder(models)
    assert run.name.startswith(f".cnn-run-{a.pid}-"), run.name
    done, rows = backed_up(run)
    assert done == 2 and sorted(rows) == [0, 1], (done, sorted(rows))

    resumed = run_script("train_cnn.py", *a_args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first_epoch_line(resumed.stdout) == "Epoch 3/4", resumed.stdout[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]
    assert history[:2] == [rows[0], rows[1]]
    log = (tmp_path / "results" / "runs.jsonl").read_text().splitlines()
    assert [(json.loads(line)["seed"], json.loads(line)["epochs"]) for line in log] == [(2, 2), (1, 4)]
    assert sorted(p.name for p in models.iterdir()) == ["cnn.keras"]


def test_runs_saving_together_leave_one_whole_file(tmp_path):
    """Eight processes save 40 large records each to one path at once through the training script's own save(),
    while a reader reads it over and over: the reader only ever sees a whole record, the file ends as one of the
    last ones written, and no temp file is left. The eight are forked after train_cnn is imported (once: Keras
    takes seconds to load, and would stagger eight imports) and start together at a barrier."""
    writers = textwrap.dedent(f"""
        import json, multiprocessing, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        import train_cnn

        PATH = {str(tmp_path / "cnn_run.json")!r}

        def write(writer, barrier):
            barrier.wait(timeout=60)
            for index in range(40):
                train_cnn.save(PATH, {{"writer": writer, "index": index, "pad": "x" * 200000}})

        def read(barrier, done):
            barrier.wait(timeout=60)
            seen = 0
            while not done.is_set() or seen == 0:
                try:
                    with open(PATH) as file:
                        text = file.read()
                except FileNotFoundError:
                    continue
                record = json.loads(text)  # a half-written record fails here
                assert len(record["pad"]) == 200000
                seen += 1
            print("reads", seen)

        fork = multiprocessing.get_context("fork")  # no Keras work in the children: only JSON files
        barrier, done = fork.Barrier(9), fork.Event()
        processes = [fork.Process(target=write, args=(str(n), barrier)) for n in range(8)]
        reader = fork.Process(target=read, args=(barrier, done))
        for process in [*processes, reader]:
            process.start()
        for process in processes:
            process.join(timeout=240)
        done.set()
        reader.join(timeout=60)
        sys.exit(sum(process.exitcode != 0 for process in [*processes, reader]))
    """)
    result = subprocess.run([sys.executable, "-c", writers], capture_output=True, text=True, check=False, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^reads [1-9]\d*$", result.stdout, re.MULTILINE), result.stdout
    record = json.loads((tmp_path / "cnn_run.json").read_text())
    assert record["index"] == 39  # the last save of one of the writers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn_run.json"]


# --- kill -9 in the middle of the final save ----------------------------------------------------------------------
KILLED_WHILE_SAVING = {  # what the final save writes, in order: the model, its history, the run's record
    "model": """
        save = keras.Model.save
        def save_halfway(self, filepath, *args, **kwargs):
            if str(filepath).endswith(".tmp.keras"):  # the model itself, not an epoch's ModelCheckpoint file
                with open(filepath, "wb") as handle:
                    handle.write(b"PK half a model")
                os.kill(os.getpid(), 9)
            return save(self, filepath, *args, **kwargs)
        keras.Model.save = save_halfway
    """,
    "history": """
        real_open = builtins.open
        def open_halfway(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            if f"cnn_{SITE}.json." in os.path.basename(str(path)) and "w" in mode:
                handle.write('{"name": "cnn", "epo')
                handle.flush()
                os.kill(os.getpid(), 9)
            return handle
        builtins.open = open_halfway
    """,
}
KILLED_WHILE_SAVING["run"] = KILLED_WHILE_SAVING["history"]


@pytest.mark.parametrize(
    ("site", "target"), [("model", "cnn.keras"), ("history", "cnn_history.json"), ("run", "cnn_run.json")]
)
def test_kill_9_while_the_final_files_are_saved(trained, tmp_path, site, target):
    """The training script is killed halfway through writing its model, its history or its record: that file is
    the previous one, every byte; every file is whole (the ones saved before it are the new ones); what is left is
    one temp file, never a half file under a file's name."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = whole_files(models, results)
    result = run_with(
        f"SITE = {site!r}\n" + textwrap.dedent(KILLED_WHILE_SAVING[site]),
        "train_cnn.py",
        *QUICK,
        *output_flags(tmp_path),
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    folder = models if site == "model" else results
    after = whole_files(models, results)
    assert sorted(after) == sorted([*before, *(name for name in after if ".tmp.keras" in name)])
    assert after[target] == before[target]
    assert after["runs.jsonl"] == before["runs.jsonl"]
    changed = {"model": [], "history": ["cnn.keras"], "run": ["cnn.keras", "cnn_history.json"]}[site]
    assert sorted(name for name in before if after[name] != before[name]) == changed  # saved before the kill
    debris = [name for name in after if name not in before]
    assert len(debris) == 1 and re.fullmatch(rf"{re.escape(target)}\.\d+\.tmp\.keras", debris[0]), debris
    assert (folder / debris[0]).is_file()


# --- a full disk -------------------------------------------------------------------------------------------------
# Each site where a training run writes, made to fail in a real training process as a full disk (or a read-only
# folder) fails there: with the OSError that Python, zipfile or h5py raise, which carries a file name only when
# open() itself failed. And the folder that the line must name ("" for "an output folder").
H5PY_FULL = (  # what h5py raises on a full disk: errno 28, no file name, a message of two lines
    "Can't synchronously write data (file write failed: time = Mon Jan  1 00:00:00 2026\n, filename = '{path}', "
    "file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 9)"
)
FAULTS = {
    "run folder": (  # config.json, the first file a run writes
        """
        def dump(obj, handle, *args, **kwargs):
            handle.write('{"half": ')
            raise OSError(errno.ENOSPC, "No space left on device")
        json.dump = dump
        """,
        "",
    ),
    "history row": (
        """
        def on_epoch_end(self, epoch, logs=None):
            raise OSError(errno.ENOSPC, "No space left on device")
        keras.callbacks.CSVLogger.on_epoch_end = on_epoch_end
        """,
        "",
    ),
    "backup": (
        f"""
        def save_weights(self, filepath, *args, **kwargs):
            raise OSError(errno.ENOSPC, {H5PY_FULL!r}.format(path=filepath))
        keras.Model.save_weights = save_weights
        """,
        "",
    ),
    "epoch file": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if not str(filepath).endswith(".tmp.keras"):  # ModelCheckpoint's file of the epoch: half written
                with open(filepath, "wb") as handle:
                    handle.write(b"PK half a model")
                raise OSError(errno.ENOSPC, "No space left on device")
            original(self, filepath, *args, **kwargs)
        keras.Model.save = save
        """,
        "",
    ),
    "model": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            original(self, filepath, *args, **kwargs)
            if str(filepath).endswith(".tmp.keras"):  # the model itself, written but for its last bytes
                raise OSError(errno.ENOSPC, "No space left on device")
        keras.Model.save = save
        """,
        "",
    ),
    "record": (
        """
        real_open = builtins.open
        def half_open(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            if os.path.basename(str(path)).startswith("cnn_run.json.") and "w" in mode:
                handle.write("{half a record")
                handle.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return handle
        builtins.open = half_open
        """,
        "",
    ),
    "read-only": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if not str(filepath).endswith(".tmp.keras"):  # an epoch's file: as it is
                return original(self, filepath, *args, **kwargs)
            raise OSError(errno.EROFS, "Read-only file system", str(filepath))  # open() fails: it names the file
        keras.Model.save = save
        """,
        "models",
    ),
}


@pytest.mark.parametrize("site", list(FAULTS))
def test_no_room_at_each_write_site(site, trained, tmp_path):
    """One line that says what failed and names the folder (or "an output folder" when the error names no file),
    exit 1, no traceback; every file whole: the previous ones intact (but those saved before the failing one), no
    temp file anywhere, whole log lines only."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = whole_files(models, results)
    patch, folder = FAULTS[site]
    result = run_with(patch, "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    reason = "Read-only file system" if site == "read-only" else "No space left on device"
    where = tmp_path / folder if folder else "an output folder"
    assert last_error_line(result.stderr) == (
        f"error: {reason} ({where}); the saved files are whole: free some space or choose another folder, then run "
        "the same command with --resume"
    )
    assert sum(line.startswith("error") for line in result.stderr.splitlines()) == 1, result.stderr[-3000:]
    after = whole_files(models, results)  # every file whole
    saved = ["cnn.keras", "cnn_history.json"] if site == "record" else []  # saved, whole, before the record failed
    assert sorted(name for name in before if after[name] != before[name]) == saved
    assert sorted(after) == sorted(before)  # the previous model and records, intact; no temp file
    assert leftovers(models, results) == []  # in the run's folder either


def test_a_run_log_line_is_whole_or_absent_on_a_full_disk(trained, tmp_path):
    """The disk fills after the first 100 bytes of the run's line in runs.jsonl: one line, exit 1, and runs.jsonl
    as it was (the line says no file was half-written)."""
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    before = (results / "runs.jsonl").read_bytes()
    patch = """
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
    """
    result = run_with(patch, "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_error_line(result.stderr).startswith("error: No space left on device (an output folder); ")
    assert (results / "runs.jsonl").read_bytes() == before


def test_a_real_full_disk_mid_training(tmp_path):
    """A real 600 KiB file system (tmpfs) as --models-dir, which fills during the first epoch's files: exit 1 and
    one line naming the folder (or "an output folder": h5py names none), no traceback, no crash, no temp file."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(tiny)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); "
            "test_no_room_at_each_write_site checks each write site without one"
        )
    try:
        args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *data_flags()]
        result = run_script("train_cnn.py", *args, "--models-dir", str(tiny), "--results-dir", str(tmp_path / "r"))
        assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
        line = last_error_line(result.stderr)
        where = re.escape(str(tiny)) + r"(/\S*)?|an output folder"
        assert re.fullmatch(
            rf"error: No space left on device \(({where})\); the saved files are whole: free some space or choose "
            "another folder, then run the same command with --resume",
            line,
        ), line
        assert sum(line.startswith("error") for line in result.stderr.splitlines()) == 1, result.stderr[-3000:]
        assert "Epoch 1/2" in result.stdout  # it filled mid-training, not before
        assert leftovers(tiny) == [] and not (tiny / "cnn.keras").exists()
    finally:
        subprocess.run(["umount", str(tiny)], check=False, timeout=60)


# --- Ctrl-C, SIGTERM, SIGHUP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_sigterm_and_sighup_stop_like_ctrl_c_and_resume_goes_on(tmp_path, stop):
    """SIGTERM (`timeout`, `docker stop`) and SIGHUP (the terminal closes) a step into epoch 2: one line, exit 128 +
    the signal's number, no model, no temp file; --resume then goes on with epoch 2 exactly."""
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path)]
    args += data_flags()
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # under `nohup make test` too, the child gets SIGHUP
    try:
        process = start("train_cnn.py", *args, prelude=fit_hook(HELD_IN_EPOCH, EPOCH=2, STEP=0))
    finally:
        signal.signal(signal.SIGHUP, hangup)
    err = stop_when(process, "hook: in epoch 2", stop)
    assert process.returncode == 128 + stop, err[-2000:]
    assert the_one_stop_line(err) == stop_line(stop.name)
    assert not (tmp_path / "models" / "cnn.keras").exists()
    assert leftovers(tmp_path / "models", tmp_path / "results") == []
    done, rows = backed_up(run_folder(tmp_path / "models"))
    assert done == 1 and sorted(rows) == [0]

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first_epoch_line(resumed.stdout) == "Epoch 2/3", resumed.stdout[-3000:]
    history = json.loads((tmp_path / "results" / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[0] == rows[0]


def test_a_stop_in_the_first_epoch_then_resume_starts_it_again(tmp_path):
    """SIGTERM before any epoch was backed up: the same one line and exit 143; --resume (as the line says) then
    trains from epoch 1 and ends with exit 0."""
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", str(SMALL_BATCH), *output_flags(tmp_path)]
    args += data_flags()
    process = start("train_cnn.py", *args, prelude=fit_hook(HELD_IN_EPOCH, EPOCH=1, STEP=0))
    err = stop_when(process, "hook: in epoch 1", signal.SIGTERM)
    assert process.returncode == 143, err[-2000:]
    assert the_one_stop_line(err) == stop_line("SIGTERM")
    run = run_folder(tmp_path / "models")
    assert not (run / "backup" / "training_metadata.json").exists()
    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first_epoch_line(resumed.stdout) == "Epoch 1/2", resumed.stdout[-3000:]
    assert "Epoch 2/2" in resumed.stdout and (tmp_path / "models" / "cnn.keras").is_file()


HELD_IN_EPOCH_2_UNTIL_RELEASED = """
class Hook(keras.callbacks.Callback):  # epoch 2 begins: said, and held until the test has sent its signals
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            say("in epoch 2")
            wait_until(pathlib.Path(RELEASE).exists)
            say(f"SIGINT {signal.getsignal(signal.SIGINT)!r}, SIGHUP {signal.getsignal(signal.SIGHUP)!r}")
"""
RUN_AS_MAIN = "\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"


def test_signals_that_nohup_and_a_background_job_ignore_stay_ignored(tmp_path):
    """`nohup python train_dense.py &` from a script: nohup ignores SIGHUP, and the shell hands a background job an
    ignored SIGINT. The script keeps both ignored, while Keras loads (held there) and while it trains (held in
    epoch 2 until both are sent), and the run finishes."""
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *output_flags(tmp_path), *data_flags()]
    release = tmp_path / "signals sent"
    hook = after_keras_loads(fit_hook(HELD_IN_EPOCH_2_UNTIL_RELEASED, RELEASE=str(release)))
    runner = holding_tensorflows_import(tmp_path / "go on") + hook + RUN_AS_MAIN
    command = [sys.executable, "-c", runner, str(ROOT / "train_dense.py"), *args]
    process = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec nohup "$@"', "sh", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_until(process, "hook: importing tensorflow", limit=120)  # its start-up block has run: Keras loads
        for stop in (signal.SIGINT, signal.SIGHUP):
            process.send_signal(stop)  # an ignored signal is dropped as it is sent: the import may go on at once
        (tmp_path / "go on").touch()
        read_until(process, "hook: in epoch 2")
        for stop in (signal.SIGINT, signal.SIGHUP):
            process.send_signal(stop)
        release.touch()
        said = read_until(process, "hook: SIGINT")[-1]
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert said.strip() == "hook: SIGINT <Handlers.SIG_IGN: 1>, SIGHUP <Handlers.SIG_IGN: 1>", said
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopped" not in err, err[-2000:]
    assert (tmp_path / "models" / "dense.keras").is_file()


def holding_tensorflows_import(release: Path) -> str:
    """Python code for a script's process: the first import of TensorFlow (inside the script's `import keras`, after
    its start-up block has set its handlers) says so on stdout and is held there until ``release`` exists (or two
    minutes pass). A signal sent on that line lands while Keras is still importing, at any machine speed."""
    return textwrap.dedent(f"""
        import importlib.abc, os, sys, time


        class HoldTensorFlowsImport(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow":
                    sys.meta_path.remove(self)
                    print("hook: importing tensorflow", flush=True)
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline and not os.path.exists({str(release)!r}):
                        time.sleep(0.01)
                return None


        sys.meta_path.insert(0, HoldTensorFlowsImport())
    """)


@pytest.mark.parametrize(
    ("script", "stop"),
    [
        ("train_cnn.py", signal.SIGINT),
        ("train_cnn.py", signal.SIGTERM),
        ("train_cnn.py", signal.SIGHUP),
        ("train_dense.py", signal.SIGTERM),
        ("compare.py", signal.SIGTERM),
    ],
    ids=["cnn-INT", "cnn-TERM", "cnn-HUP", "dense-TERM", "compare-TERM"],
)
def test_a_stop_while_keras_is_still_importing(tmp_path, script, stop):
    """Ctrl-C, SIGTERM or SIGHUP while the script's `import keras` is loading TensorFlow (held there until the
    signal comes): one line, exit 128 + the signal's number, nothing written."""
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        prelude = holding_tensorflows_import(tmp_path / "never")
        process = start(script, *output_flags(tmp_path), *data_flags(), prelude=prelude)
    finally:
        signal.signal(signal.SIGHUP, hangup)
    err = stop_when(process, "hook: importing tensorflow", stop, limit=120)
    assert process.returncode == 128 + stop, err[-2000:]
    line = last_error_line(err)
    assert sum("stopped" in line for line in err.splitlines()) == 1, err[-2000:]
    if script == "compare.py":  # its line is compare.py's own business past these words
        assert line.startswith(f"stopped ({stop.name}) while loading Keras"), line
    else:
        assert line == f"stopped ({stop.name}) while loading Keras", line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # not even the models or results folder


MODEL_WRITE_HELD = """
import os
_save = keras.Model.save
def save(self, filepath, *args, **kwargs):
    if str(filepath).endswith(".tmp.keras"):  # the model, not an epoch's file
        say("writing the model")
        wait_until(noted_signal)
        say("noted")
        if HOLD == "forever":
            wait_until(lambda: False)  # a second stop raises in here
    return _save(self, filepath, *args, **kwargs)
keras.Model.save = save
"""


def test_a_stop_during_the_final_save_lets_it_finish(trained, tmp_path, small_npz):
    """Ctrl-C while the trained model is being written: noted, and the save goes on to the end: exit 0, the new
    model and records whole, the run's folder gone, no temp file."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = whole_files(models, results)
    args = ["--train-size", "1000", "--epochs", "2", "--batch-size", "64", *output_flags(tmp_path)]
    args += ["--data", str(small_npz)]
    process = start("train_cnn.py", *args, prelude=HOOK_TOOLS + "HOLD = 'until noted'\n" + MODEL_WRITE_HELD)
    err = stop_when(process, "hook: writing the model", signal.SIGINT)
    assert process.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopped" not in err, err[-2000:]
    after = whole_files(models, results)
    changed = sorted(name for name in after if after[name] != before[name])
    assert changed == ["cnn.keras", "cnn_history.json", "cnn_run.json", "runs.jsonl"], changed
    assert json.loads((results / "cnn_run.json").read_text())["train_images"] == 900
    assert leftovers(models, results) == [] and not list(models.glob(".cnn-run-*"))


def test_a_second_stop_during_the_final_save_leaves_the_old_files_whole(trained, tmp_path, small_npz):
    """Ctrl-C twice while the trained model is being written: the second acts at once: the stop line, exit 130, the
    previous model and records every byte, no temp file; --resume (every epoch is backed up) then trains no epoch
    again, and saves."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = whole_files(models, results)
    args = ["--train-size", "1000", "--epochs", "2", "--batch-size", "64", *output_flags(tmp_path)]
    args += ["--data", str(small_npz)]
    process = start("train_cnn.py", *args, prelude=HOOK_TOOLS + "HOLD = 'forever'\n" + MODEL_WRITE_HELD)
    read_until(process, "hook: writing the model")
    process.send_signal(signal.SIGINT)  # noted
    err = stop_when(process, "hook: noted", signal.SIGINT)  # acts at once
    assert process.returncode == 130, err[-2000:]
    assert the_one_stop_line(err) == stop_line("SIGINT")
    assert whole_files(models, results) == before
    assert leftovers(models, results) == []

    resumed = run_script("train_cnn.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Epoch " not in resumed.stdout, resumed.stdout[-3000:]
    history = json.loads((results / "cnn_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1]
    assert json.loads((results / "cnn_run.json").read_text())["train_images"] == 900
    assert sorted(p.name for p in models.iterdir()) == ["cnn.keras", "dense.keras"]


def test_sigterm_while_compare_writes_keeps_the_previous_comparison(trained, tmp_path, small_npz):
    """SIGTERM lands when half of the new comparison.json is written: the previous comparison.json and .png stay,
    every byte, and no temp file is left."""
    results = tmp_path / "results"
    shutil.copytree(trained["results"], results)
    (results / "comparison.json").write_text('{"data": "the previous comparison"}\n')
    (results / "comparison.png").write_bytes(b"\x89PNG\r\n\x1a\n the previous figure")
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    patch = """
        import signal
        real_open = builtins.open
        class CutOff:  # writes half, then the signal comes
            def __init__(self, handle):
                self.handle = handle
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self.handle.close()
            def __getattr__(self, name):
                return getattr(self.handle, name)
            def write(self, data):
                self.handle.write(data[: len(data) // 2])
                self.handle.flush()
                os.kill(os.getpid(), signal.SIGTERM)
                return len(data)
        def cut_open(path, mode="r", *args, **kwargs):
            handle = real_open(path, mode, *args, **kwargs)
            return CutOff(handle) if str(path).endswith("comparison.json") and "w" in mode else handle
        builtins.open = cut_open
    """
    flags = ["--models-dir", str(trained["models"]), "--results-dir", str(results), "--data", str(small_npz)]
    result = run_with(patch, "compare.py", *flags)
    assert result.returncode == 143, result.stderr[-2000:]
    assert last_error_line(result.stderr) == "stopped (SIGTERM): nothing was half-written; run the same command again"
    assert "evaluated and timed" in result.stdout  # it got as far as the writing
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before  # no temp file either


def test_ctrl_c_reaches_a_child_started_as_in_a_terminal(tmp_path):
    """The suite's own way to start a script: under a parent that ignores SIGINT (like `make test &`), a plain child
    inherits the ignored SIGINT, and a child started through AS_IN_A_TERMINAL gets Python's own handler back."""
    probe = tmp_path / "probe.py"
    probe.write_text("import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    for runner, expected in (([], "False"), (["-c", AS_IN_A_TERMINAL], "True")):
        command = [sys.executable, *runner, str(probe)]
        parent = (
            "import signal, subprocess as s; signal.signal(signal.SIGINT, signal.SIG_IGN); "
            f"s.run({command!r}, timeout=60)"
        )
        result = subprocess.run(
            [sys.executable, "-c", parent], capture_output=True, text=True, check=False, timeout=120
        )
        assert result.stdout.strip() == expected, (runner, result.stdout, result.stderr)
