"""Bad conditions on a learner's laptop: two runs at once, a full disk, Ctrl-C, SIGTERM, SIGHUP. One clear line,
nothing lost."""

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
import pytest
from conftest import (
    AS_IN_A_TERMINAL,
    HOOK_TOOLS,
    ROOT,
    SMALL_BATCH,
    data_flags,
    fit_hook,
    output_flags,
    read_until,
    run_script,
    start,
    wait_for_epochs,
)
from test_reliability import backed_up, first_epoch_line

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


# --- the two training scripts share their safety code ----------------------------------------------------------
def shared_code(script: str) -> dict[str, str]:
    """A training script's safety code: its text from the Safety heading on, the block at its top that handles a
    stop while TensorFlow loads, every function and class but the network's and the flags', and main() as it would
    read for the dense network (its name, and no --preset best)."""
    text = (ROOT / script).read_text()
    code = {
        "safety": text[text.index("\n# Safety") :],
        "startup": text[text.index('if __name__ == "__main__":') : text.index("\nimport keras")],
    }
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name not in CNN_ONLY:
            code[node.name] = ast.dump(AsTheDenseMain().visit(node) if node.name == "main" else node)
    return code


CNN_ONLY = ("build_model", "build_best_model", "with_shifted_views")  # the networks, and the best preset's views


class AsTheDenseMain(ast.NodeTransformer):
    """train_cnn.main as train_dense.main reads: "dense" for "cnn", build_model() for the preset's choice, and no
    shifted views."""

    def visit_With(self, node):
        views = any(getattr(n, "id", None) == "with_shifted_views" for n in ast.walk(node))
        return None if views else self.generic_visit(node)

    def visit_Constant(self, node):
        return ast.Constant("dense") if node.value == "cnn" else node

    def visit_Assign(self, node):
        if [getattr(target, "id", None) for target in node.targets] == ["build"]:
            return None
        return self.generic_visit(node)

    def visit_Name(self, node):
        return ast.Name("build_model", node.ctx) if node.id == "build" else node


def test_train_dense_has_the_same_safety_code_as_train_cnn():
    """What the tests below check in train_cnn.py (a stop, a full disk, two runs, the records) holds for
    train_dense.py too: its safety code is the same, line for line."""
    cnn, dense = shared_code("train_cnn.py"), shared_code("train_dense.py")
    cnn.pop("parse_args"), dense.pop("parse_args")  # the flags' defaults differ; --preset is the CNN's only
    assert sorted(cnn) == sorted(dense)
    assert [name for name in cnn if cnn[name] != dense[name]] == []
    assert "def save_all(" in cnn["safety"] and "def run(main)" in cnn["safety"] and "main(stop=stop)" in cnn["safety"]


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
    """Eight processes save 40 large records each through the training script's own save_all, appending to one
    runs.jsonl at once: every line is one whole record. The eight are forked after train_cnn is imported (once:
    TensorFlow takes seconds to load, and would stagger eight imports) and start together at a barrier."""
    writers = textwrap.dedent(f"""
        import multiprocessing, sys
        sys.path.insert(0, {str(ROOT)!r})
        import train_cnn

        def write(writer, barrier):
            barrier.wait(timeout=60)
            for index in range(40):
                record = {{"writer": writer, "index": index, "pad": "x" * 20000}}
                path = {str(tmp_path / "record")!r} + writer + ".json"
                train_cnn.save_all({{path: record}}, {str(tmp_path)!r})

        fork = multiprocessing.get_context("fork")  # no TensorFlow in the children: only JSON files
        barrier = fork.Barrier(8)
        processes = [fork.Process(target=write, args=(str(n), barrier)) for n in range(8)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        sys.exit(sum(process.exitcode != 0 for process in processes))
    """)
    result = subprocess.run([sys.executable, "-c", writers], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
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
    done, rows = backed_up(state)
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
    assert [row["epoch"] for row in history] == [0, 1, 2, 3]  # a restart from scratch gives that too: so
    if backup == "whole":  # it went on after the backup's epochs, whose rows are those written before the kill
        assert first_epoch_line(resumed.stdout) == f"Epoch {done + 1}/4", resumed.stdout[-3000:]
        assert history[:done] == [rows[epoch] for epoch in range(done)]
    else:
        assert first_epoch_line(resumed.stdout) == "Epoch 1/4", resumed.stdout[-3000:]
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


# Each site where a training run writes, made to fail in a real training process as a full disk (or a read-only
# folder) fails there: with the OSError that Python, zipfile or h5py raise, which carries no file name unless open()
# itself failed. And the folder that the line must name, in tmp_path.
H5PY_FULL = (  # what h5py raises on a full disk: the file's name only in its text
    "Can't synchronously write data (file write failed: time = Mon Jan  1 00:00:00 2026\n, filename = '{path}', "
    "file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 9)"
)
FAULTS = {
    "backup config": (
        """
        def dump(obj, handle, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")
        json.dump = dump
        """,
        "models/.resume-cnn",
    ),
    "history": (
        """
        def on_epoch_end(self, epoch, logs=None):
            raise OSError(errno.ENOSPC, "No space left on device")
        keras.callbacks.CSVLogger.on_epoch_end = on_epoch_end
        """,
        "models/.resume-cnn",
    ),
    "backup": (
        f"""
        def save_weights(self, filepath, *args, **kwargs):
            raise OSError(errno.ENOSPC, {H5PY_FULL!r}.format(path=filepath))
        keras.Model.save_weights = save_weights
        """,
        "models/.resume-cnn/state",
    ),
    "h5py backup": (
        f"""
        def save_weights(self, filepath, *args, **kwargs):  # older h5py: the errno only in the text, too
            raise OSError({H5PY_FULL!r}.format(path=filepath))
        keras.Model.save_weights = save_weights
        """,
        "models/.resume-cnn/state",
    ),
    "epoch file": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if os.path.basename(filepath).startswith(".tmp-epoch-"):  # the network after an epoch: half written
                with open(filepath, "wb") as handle:
                    handle.write(b"PK half a model")
                raise OSError(errno.ENOSPC, "No space left on device")
            original(self, filepath, *args, **kwargs)
        keras.Model.save = save
        """,
        "models/.resume-cnn",
    ),
    "model": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            original(self, filepath, *args, **kwargs)
            if not os.path.basename(filepath).startswith(".tmp-epoch-"):  # the model itself
                raise OSError(errno.ENOSPC, "No space left on device")
        keras.Model.save = save
        """,
        "models",
    ),
    "record": (
        """
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
        "results",
    ),
    "run log": (
        """
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
        "results",
    ),
    "read-only": (
        """
        original = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if os.path.basename(filepath).startswith(".tmp-epoch-"):  # the network after an epoch: as it is
                return original(self, filepath, *args, **kwargs)
            raise OSError(errno.EROFS, "Read-only file system", str(filepath))  # open() fails: it names the file
        keras.Model.save = save
        """,
        "models",
    ),
}


@pytest.mark.parametrize("site", list(FAULTS))
def test_no_room_at_each_write_site(site, trained, tmp_path):
    """One line that names the folder where the write failed (README: "the line names the folder"), exit 1; the
    previous model and records intact, no half file anywhere, whole log lines only."""
    models, results = tmp_path / "models", tmp_path / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    before = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir()}
    patch, folder = FAULTS[site]
    result = run_with(patch, "train_cnn.py", *QUICK, *output_flags(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    line = last_error_line(result.stderr)
    reason = "is read-only (Read-only file system)" if site == "read-only" else "is full (No space left on device)"
    assert line.startswith(f"error: {tmp_path / folder} {reason}; "), line
    assert line.endswith("run the same command again"), line
    after = {p.name: p.read_bytes() for folder in (models, results) for p in folder.iterdir() if p.is_file()}
    assert {name: after.get(name) for name in before} == before  # the previous model and records, intact
    assert leftovers(models, results, models / ".resume-cnn") == []  # no half file, in the run's folder either
    if site == "epoch file":  # the half-written network is gone, and none stands under an epoch file's name
        assert not list((models / ".resume-cnn").glob("epoch-*.keras"))
    for line in (results / "runs.jsonl").read_text().splitlines():
        json.loads(line)  # whole lines only


def test_a_real_full_disk_mid_training(tmp_path):
    """A real 600 KiB file system (tmpfs) as --models-dir, which fills during the first epoch's backup (another
    program took the room after the check at the start: here, the check is told there is plenty): exit 1 and one
    line naming the folder, no traceback, no crash."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(tiny)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        patch = """
            real = shutil.disk_usage
            shutil.disk_usage = lambda path: real(path)._replace(free=2**40)
        """
        args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *data_flags()]
        result = run_with(patch, "train_cnn.py", *args, "--models-dir", str(tiny), "--results-dir", str(tmp_path / "r"))
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
        line = last_error_line(result.stderr)
        assert re.match(rf"error: {re.escape(str(tiny))}\S* is full \(No space left on device\); ", line), line
        assert leftovers(tiny, tiny / ".resume-cnn") == []
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


# --- Ctrl-C, SIGTERM, SIGHUP ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stop", "words"), [(signal.SIGTERM, "stopped (SIGTERM)"), (signal.SIGHUP, "stopped (SIGHUP)")], ids=["TERM", "HUP"]
)
def test_sigterm_and_sighup_stop_like_ctrl_c_and_resume_goes_on(tmp_path, stop, words):
    """SIGTERM (`timeout`, `docker stop`) and SIGHUP (the terminal closes): one line naming the epoch and --resume,
    exit 128 + the signal's number; --resume then goes on from the next epoch."""
    args = ["--train-size", "3000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # under `nohup make test` too, the child gets SIGHUP
    try:
        process = start("train_cnn.py", *args)
    finally:
        signal.signal(signal.SIGHUP, hangup)
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


def test_signals_that_nohup_and_a_background_job_ignore_stay_ignored(tmp_path):
    """`nohup python train_dense.py &` from a script: nohup ignores SIGHUP, and the shell hands a background job an
    ignored SIGINT. The script keeps both ignored, while TensorFlow loads and while it trains, and the run
    finishes."""
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64", *output_flags(tmp_path), *data_flags()]
    runner = holding_tensorflows_import(tmp_path / "go on") + RUN_AS_MAIN
    command = [sys.executable, "-c", runner, str(ROOT / "train_dense.py"), *args]
    process = subprocess.Popen(
        ["sh", "-c", 'trap "" INT; exec nohup "$@"', "sh", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    read_until(process, "hook: importing tensorflow", limit=120)  # its start-up block has run: TensorFlow loads
    for stop in (signal.SIGINT, signal.SIGHUP):
        process.send_signal(stop)  # an ignored signal is dropped as it is sent: the import may go on at once
    (tmp_path / "go on").touch()
    wait_for_epochs(tmp_path / "models" / ".resume-dense", 1, process)
    for stop in (signal.SIGINT, signal.SIGHUP):
        process.send_signal(stop)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    assert "interrupted" not in err and "stopped" not in err, err[-2000:]
    assert "Epoch 2/2" in out and (tmp_path / "models" / "dense.keras").is_file()


RUN_AS_MAIN = "\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"


def holding_tensorflows_import(release: Path) -> str:
    """Python code for a script's process: the first import of TensorFlow (inside the script's `import keras`, after
    its start-up block has set its handlers) says so on stdout and is held there until ``release`` exists (or two
    minutes pass). A signal sent on that line lands while TensorFlow is still importing, at any machine speed."""
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


@pytest.mark.parametrize("script", ["train_cnn.py", "compare.py"])
def test_sigterm_while_tensorflow_is_still_importing(tmp_path, script):
    """SIGTERM while the script's `import keras` is loading TensorFlow (held there until the signal comes): one
    line, exit 143, nothing written."""
    process = start(script, *output_flags(tmp_path), prelude=holding_tensorflows_import(tmp_path / "never"))
    try:
        read_until(process, "hook: importing tensorflow", limit=120)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, err[-2000:]
    assert last_error_line(err) == "stopped (SIGTERM) while starting: nothing was written; run the same command again"
    assert not (tmp_path / "models").exists() and not (tmp_path / "results").exists()


IN_EPOCH_1_UNTIL_A_STOP = """
class Hook(keras.callbacks.Callback):  # the first step of epoch 1 done: said, and held until the stop is noted
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            say("in epoch 1")
            wait_until(noted_signal)
"""


def test_sigterm_before_the_first_backup_says_to_start_again(tmp_path):
    args = ["--train-size", "2000", "--epochs", "3", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args, prelude=fit_hook(IN_EPOCH_1_UNTIL_A_STOP))
    read_until(process, "hook: in epoch 1")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert not (tmp_path / "models" / ".resume-cnn" / "state" / "training_metadata.json").exists()
    line = last_error_line(err)
    expected = "nothing was half-written; no epoch was backed up yet: run the same command again"
    assert line == f"stopped (SIGTERM) in epoch 1 of 3: {expected}", line


HELD_IN_A_STEP = """
class Hook(keras.callbacks.Callback):  # the third step of epoch 1 goes on and on, as a long step would
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            say("in a step")
            wait_until(noted_signal)
            say("the first Ctrl-C is noted; the step goes on")
            wait_until(lambda: False, limit=60)  # only the second Ctrl-C ends it
"""


def test_a_second_ctrl_c_acts_at_once(tmp_path):
    """Once a run holds its lock, Ctrl-C waits for the end of the step (a step cut inside TensorFlow's code can break
    it); a second Ctrl-C acts at once, inside the step. The test's hook holds a step, as a very long one would go on:
    the first Ctrl-C is noted and the step goes on; the second ends the run, in one line, exit 130."""
    args = ["--train-size", "2000", "--epochs", "2", "--batch-size", "32", *output_flags(tmp_path), *data_flags()]
    process = start("train_cnn.py", *args, prelude=fit_hook(HELD_IN_A_STEP))
    try:
        read_until(process, "hook: in a step")
        process.send_signal(signal.SIGINT)
        read_until(process, "hook: the first Ctrl-C is noted; the step goes on", limit=60)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err[-2000:]
    expected = "nothing was half-written; no epoch was backed up yet: run the same command again"
    assert last_error_line(err) == f"interrupted in epoch 1 of 2: {expected}", err[-2000:]
    assert leftovers(tmp_path / "models", tmp_path / "results") == []


FINAL_SAVE_HOOKS = {  # where the final save is when the stop comes: said, and held there until the stop is noted
    "writing the model": """
        import os, re
        _save = keras.Model.save
        def save(self, filepath, *args, **kwargs):
            if re.fullmatch(r"\\.tmp-\\d+-cnn\\.keras", os.path.basename(filepath)):  # the model, not an epoch's
                say("writing the model")
                wait_until(noted_signal)
            return _save(self, filepath, *args, **kwargs)
        keras.Model.save = save
    """,
    "putting the files in place": """
        import os
        _replace = os.replace
        def replace(src, dst, **kwargs):
            if os.path.basename(dst) == "cnn.keras":  # the first rename, after the run's line in runs.jsonl
                say("putting the files in place")
                wait_until(noted_signal)
            return _replace(src, dst, **kwargs)
        os.replace = replace
    """,
}


@pytest.mark.parametrize(
    ("moment", "stop"),
    [("writing the model", signal.SIGINT), ("putting the files in place", signal.SIGTERM)],
    ids=["ctrl-c-writing-the-model", "sigterm-putting-the-files-in-place"],
)
def test_a_stop_during_the_final_save_lets_the_save_finish(tmp_path, small_npz, moment, stop):
    """Ctrl-C or SIGTERM while the trained model and its records are saved: the save finishes, and the run ends as
    usual: exit 0, its summary line, the model saved (it loads), its records and its line in runs.jsonl, no backup
    folder, no temp file."""
    args = ["--train-size", "1000", "--epochs", "1", "--batch-size", "64", *output_flags(tmp_path)]
    prelude = HOOK_TOOLS + textwrap.dedent(FINAL_SAVE_HOOKS[moment])
    process = start("train_cnn.py", *args, "--data", str(small_npz), prelude=prelude)
    try:
        read_until(process, f"hook: {moment}")
        process.send_signal(stop)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert "interrupted" not in err and "stopped" not in err and "Traceback" not in err, err[-2000:]
    models, results = tmp_path / "models", tmp_path / "results"
    assert re.search(rf"^cnn: test accuracy .* -> {re.escape(str(models / 'cnn.keras'))}$", out, re.MULTILINE), out
    assert keras.saving.load_model(models / "cnn.keras", safe_mode=True).count_params() == 35_338
    record = json.loads((results / "cnn_run.json").read_text())
    assert [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()] == [record]
    assert (results / "cnn_history.json").is_file() and not (models / ".resume-cnn").exists()
    assert leftovers(models, results) == []


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
        parent = f"import signal, subprocess as s; signal.signal(signal.SIGINT, signal.SIG_IGN); s.run({command!r})"
        result = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=False)
        assert result.stdout.strip() == expected, (runner, result.stdout, result.stderr)
