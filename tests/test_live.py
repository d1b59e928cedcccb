"""The live page follows training: what mnistlab/live.py reads of a run's files, and both scripts training for real
while headless Chromium watches serve.py's page."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, STROKES, data_flags, draw, fit_hook, last_words, read_until, start

from mnistlab import live
from mnistlab.explain import Explainer

HEADER = "epoch,accuracy,epoch_seconds,loss,val_accuracy,val_loss\n"


def row(epoch: int, accuracy: float, seconds: float = 2.0) -> str:
    return f"{epoch},{accuracy},{seconds},{1 - accuracy},{accuracy + 0.01},{1.1 - accuracy}\n"


def a_run(models: Path, *, epochs: int = 5, rows: int = 0, age: float = 0.0, seconds: float = 2.0) -> Path:
    """The files a run of train_cnn.py keeps in its own folder (as the script writes them: see test_each_epoch...),
    last changed ``age`` seconds ago."""
    folder = models / ".cnn-run-4242"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"epochs": epochs, "preset": "fast"}))
    (folder / "history.csv").write_text(HEADER + "".join(row(e, 0.9 + e / 100, seconds) for e in range(rows)))
    for epoch in range(1, rows + 1):
        (folder / f"epoch-{epoch}.keras").write_bytes(b"")
    return made_older(folder, age)


def made_older(folder: Path, age: float) -> Path:
    """Every file in ``folder``, and the folder, as last changed ``age`` seconds ago."""
    when = time.time() - age
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (when, when))
    return folder


def test_history_is_read_in_whole_lines_and_an_epochs_last_row_wins(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(HEADER + row(0, 0.90) + row(1, 0.93) + row(1, 0.95) + "2,0.97,2.0,0.0")  # the last line is cut off
    history = live.read_history_csv(path)
    assert [(r["epoch"], r["accuracy"]) for r in history] == [(0, 0.90), (1, 0.95)]  # after --resume: the new row
    assert live.read_history_csv(tmp_path / "none.csv") == []
    path.write_text("epoch,accura")  # a header being written
    assert live.read_history_csv(path) == []


STOPPED = (
    "stopped after epoch 2 of 5 (its files have not changed for a while): run the same command with --resume to go on"
)


@pytest.mark.parametrize(
    ("setup", "state", "line"),
    [
        ("nothing", "not started", "not started: run `python train_cnn.py`"),
        ("folder only", "starting", "starting"),  # between making its folder and writing its flags there
        ("stopped in epoch 1", "stopped", "stopped in epoch 1 of 5, before it finished: run the same command again"),
        ("diverged", "diverged", "diverged in epoch 3 of 5: the loss is not a number; try a lower --learning-rate"),
        ("finished, 1 epoch", "finished", "finished: 1 epoch (test accuracy 98.77%)"),
        ("finished, no records", "finished", "finished"),
        ("saved, removing its folder", "finished", "finished: 2 epochs (test accuracy 98.77%)"),
        ("training", "training", "epoch 3 of 5 (epoch 2 done)"),
        ("first epoch", "training", "epoch 1 of 5"),
        ("slow epochs", "training", "epoch 3 of 5 (epoch 2 done)"),  # 3 of its epochs have not passed in silence
        ("all epochs done", "testing", "epoch 5 of 5 done: testing and saving"),
        ("stopped", "stopped", STOPPED),
        ("killed mid-save", "stopped", STOPPED),
        ("finished", "finished", "finished: 2 epochs (test accuracy 98.77%)"),
        ("a new run after a finished one", "training", "epoch 3 of 5 (epoch 2 done)"),
    ],
)
def test_each_state_of_a_run_as_its_files_tell_it(tmp_path, setup, state, line):
    models, results = tmp_path / "models", tmp_path / "results"
    models.mkdir()
    results.mkdir()
    folder = models / ".cnn-run-4242"
    quiet = 60 * 60  # an hour: what is older counts as stopped
    if setup == "folder only":
        folder.mkdir()
    elif setup in ("training", "first epoch", "all epochs done"):
        a_run(models, rows={"training": 2, "first epoch": 0, "all epochs done": 5}[setup], age=quiet - 60)
    elif setup == "slow epochs":
        a_run(models, rows=2, age=2 * quiet, seconds=quiet)
    elif setup == "stopped":  # Ctrl-C: the run kept its folder for --resume
        a_run(models, rows=2, age=quiet + 60)
    elif setup == "killed mid-save":  # kill -9 while ModelCheckpoint wrote epoch 3: its row never came
        (a_run(models, rows=2) / "epoch-3.keras").write_bytes(b"PK\x03\x04 cut off")
        made_older(folder, quiet + 60)
    elif setup == "stopped in epoch 1":
        a_run(models, rows=0, age=quiet + 60)
    elif setup == "diverged":  # TerminateOnNaN ends the epoch; CSVLogger still writes its row
        a_run(models, rows=2)
        with (folder / "history.csv").open("a") as file:
            file.write("2,0.1,2.0,nan,0.1,nan\n")
    if setup.startswith(("finished", "saved", "a new run")):
        if setup == "saved, removing its folder":  # the model and records are newer than the run's last file
            a_run(models, rows=1, age=1.0)
        (models / "cnn.keras").write_bytes(b"")
        if setup != "finished, no records":
            epochs = 1 if setup == "finished, 1 epoch" else 2
            (results / "cnn_run.json").write_text(json.dumps({"epochs": epochs, "test_accuracy": 0.98765}))
            (results / "cnn_history.json").write_text(json.dumps({"name": "cnn", "epochs": [{"epoch": 0.0}] * epochs}))
        if setup == "a new run after a finished one":
            made_older(models, 600)
            a_run(models, rows=2)
    found = live.progress("cnn", models, results, quiet=quiet)
    assert (found.state, found.line) == (state, line)
    shown = json.loads(json.dumps(found.as_json(), allow_nan=False))  # strict JSON: a NaN would break the page
    if setup == "training":
        assert [(r["epoch"], r["seconds"], r["accuracy"]) for r in shown["history"]] == [(1, 2.0, 0.9), (2, 4.0, 0.91)]
    if setup == "diverged":  # the NaN epoch keeps its accuracy and seconds, and loses its loss
        assert shown["history"][-1] == {"epoch": 3, "accuracy": 0.1, "val_accuracy": 0.1, "seconds": 6.0}
    if found.state in ("training", "testing", "stopped") and found.history:  # the last epoch whose row is written
        epoch = 5 if setup == "all epochs done" else 2
        assert (found.model_path, found.model_epoch) == (folder / f"epoch-{epoch}.keras", epoch)


def test_the_newest_run_folder_is_the_run_and_a_file_without_its_row_is_never_the_model(tmp_path):
    """Two runs in one folder (a stopped one, a newer one): the page follows the newer. Its newest whole model is the
    epoch whose history row is written: ModelCheckpoint writes epoch-K.keras before CSVLogger writes row K, so a file
    without its row may still be being written, and a temp file is never read."""
    made_older(a_run(tmp_path, rows=4), 600)
    newer = tmp_path / ".cnn-run-4343"
    a_run(tmp_path / "newer", rows=2).rename(newer)
    for name in ("epoch-3.keras", "epoch-10.keras", "epoch-2.keras.4343.tmp.keras"):
        (newer / name).write_bytes(b"")
    found = live.progress("cnn", tmp_path, tmp_path)
    assert (found.state, found.model_path, found.model_epoch) == ("training", newer / "epoch-2.keras", 2)


def test_a_run_without_validation_has_no_validation_points(tmp_path):
    """--val-split 0 (--preset best): Keras' CSVLogger writes NA, or no column, for the validation numbers."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,epoch_seconds,loss,val_loss\n0,0.9,2.5,0.3,NA\n1,0.95,2.5,0.2,NA\n")
    rows = live.Progress("cnn", "training", 5, live.read_history_csv(path)).as_json()["history"]
    assert rows == [
        {"epoch": 1, "accuracy": 0.9, "loss": 0.3, "seconds": 2.5},
        {"epoch": 2, "accuracy": 0.95, "loss": 0.2, "seconds": 5.0},
    ]


def test_an_unreadable_model_is_said_on_the_page_and_the_server_goes_on(tmp_path, capsys):
    folder = a_run(tmp_path, rows=1)
    (folder / "epoch-1.keras").write_bytes(b"PK\x03\x04 cut off")  # its row is written: it should be whole
    watcher = live.Watcher(tmp_path, tmp_path, Explainer())
    for _ in range(2):  # said once on the terminal, on the page at every look
        cnn = watcher.look()["cnn"]
        assert cnn["model"] is None and cnn["state"] == "training"
        assert "epoch-1.keras is not a readable Keras model" in cnn["problem"], cnn["problem"]
    assert capsys.readouterr().err.count("not a readable Keras model") == 1


# --- both scripts training for real, while the page watches ------------------------------------------------------
def page_state(browser) -> dict:
    """Everything the test checks, read in one go from the page as the browser shows it."""
    return browser.execute_script(
        """
        const item = (name) => document.getElementById(`state-${name}`);
        const units = [...document.querySelectorAll('#units-dense canvas')];
        return {
          cnn: {state: item('cnn').dataset.state, epoch: Number(item('cnn').dataset.epoch),
                line: item('cnn').querySelector('.line').textContent,
                points: document.querySelectorAll('#chart-accuracy-epoch circle.pt.cnn.train').length,
                seconds: document.querySelectorAll('#chart-loss-seconds circle.pt.cnn.val').length,
                weights: document.getElementById('kernels-cnn').toDataURL(),
                weightsEpoch: document.getElementById('kernels-cnn').dataset.epoch,
                by: document.getElementById('cnn-by').textContent},
          dense: {state: item('dense').dataset.state, epoch: Number(item('dense').dataset.epoch),
                  line: item('dense').querySelector('.line').textContent,
                  points: document.querySelectorAll('#chart-accuracy-epoch circle.pt.dense.train').length,
                  seconds: document.querySelectorAll('#chart-loss-seconds circle.pt.dense.val').length,
                  weights: units.map((c) => c.toDataURL()).join(),
                  weightsEpoch: document.getElementById('units-dense').dataset.epoch,
                  by: document.getElementById('dense-by').textContent},
          kernels: {width: document.getElementById('kernels-cnn').width, units: units.length},
        };
        """
    )


CNN_EPOCHS, DENSE_EPOCHS, DENSE_STOP_AFTER = 3, 12, 3
# Each run is held after each epoch (its files written) until the page shows that epoch (the dense network's last,
# until its Ctrl-C stops it): the page sees every epoch, however fast the machine trains.
HELD_UNTIL_SHOWN = """
HOLDS = pathlib.Path(HOLDS)


class Hook(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        (HOLDS / f"{NAME}-{epoch + 1}.held").touch()
        wait_until(lambda: (HOLDS / f"{NAME}-{epoch + 1}.go").exists() or noted_signal())  # Ctrl-C: noted
"""


def test_the_page_follows_both_scripts_as_they_train(browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    (tmp_path / "models").mkdir()
    (tmp_path / "results").mkdir()
    flags = ["--models-dir", str(tmp_path / "models"), "--results-dir", str(tmp_path / "results")]
    server = start("serve.py", "--port", "0", *flags)  # with empty folders: before any model or record exists
    runs: dict[str, subprocess.Popen[str]] = {}
    try:
        line = read_until(server, "http://", limit=120)[-1]
        assert "http://127.0.0.1:" in line, line
        url = line.split(" on ", 1)[1].split()[0]
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda d: page_state(d)["cnn"]["state"] == "not started")
        assert "python train_dense.py" in page_state(browser)["dense"]["line"]
        slice_ = ["--train-size", "12000", "--batch-size", "128", *data_flags(), *flags]
        holds = tmp_path / "holds"
        holds.mkdir()
        for name, epochs in (("cnn", CNN_EPOCHS), ("dense", DENSE_EPOCHS)):
            hook = fit_hook(HELD_UNTIL_SHOWN, HOLDS=str(holds), NAME=name)
            runs[name] = start(f"train_{name}.py", "--epochs", str(epochs), *slice_, prelude=hook)
        seen = {name: {"epochs": set(), "points": set(), "weights": {}, "answered": set()} for name in runs}
        drawn, shown_epochs = False, dict.fromkeys(runs, 0)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and any(run.poll() is None for run in runs.values()):
            now = page_state(browser)
            for name, run in runs.items():
                ours, shown = seen[name], now[name]
                if run.poll() is None and shown["state"] == "training":
                    ours["epochs"].add(shown["epoch"])
                    ours["points"].add(shown["points"])
                if shown["weightsEpoch"]:
                    ours["weights"].setdefault(shown["weightsEpoch"], shown["weights"])
                # The drawing is answered by the newest model the page has (it asks again when one comes).
                if shown["by"] == f"answered by the model after epoch {shown['weightsEpoch']}":
                    ours["answered"].add(int(shown["weightsEpoch"]))
            if not drawn and now["cnn"]["weightsEpoch"] and now["dense"]["weightsEpoch"]:
                draw(browser, STROKES["1"])
                drawn = True
            for name, run in runs.items():  # a run held after its epoch K goes on once the page shows that epoch
                epoch, shown = shown_epochs[name] + 1, now[name]
                if not (holds / f"{name}-{epoch}.held").exists():
                    continue
                on_the_page = (shown["epoch"], shown["points"], shown["weightsEpoch"]) == (epoch, epoch, str(epoch))
                answered = not drawn or shown["by"] == f"answered by the model after epoch {epoch}"
                if on_the_page and answered:
                    shown_epochs[name] = epoch
                    if name == "dense" and epoch == DENSE_STOP_AFTER:
                        run.send_signal(signal.SIGINT)  # Ctrl-C in the dense network's terminal: it stops
                    else:
                        (holds / f"{name}-{epoch}.go").touch()
            time.sleep(0.2)
        assert all(run.poll() is not None for run in runs.values()), ("still training", shown_epochs)
        for name, run in runs.items():
            out, err = run.communicate(timeout=120)
            assert run.returncode == (0 if name == "cnn" else 130), (name, err[-3000:])
        assert err.strip().splitlines()[-1] == (
            "stopped (SIGINT): no file was half-written; run the same command with --resume to go on from the last "
            "finished epoch"
        ), err[-1000:]
        assert "Traceback" not in err, err[-3000:]
        # No PID tells the page that a run has stopped: its files going quiet do. Two minutes of quiet, passed here.
        made_older(next((tmp_path / "models").glob(".dense-run-*")), live.QUIET + 60)
        for name, ours in seen.items():
            assert len(ours["epochs"]) >= 2 and len(ours["points"]) >= 2, (name, ours["epochs"], ours["points"])
            weights = [ours["weights"][epoch] for epoch in sorted(ours["weights"])]
            assert len(weights) >= 2 and len(set(weights)) == len(weights), (name, sorted(ours["weights"]))
            assert max(ours["answered"], default=0) >= 2, (name, ours["answered"])
        # The CNN finished, the dense network was stopped: both lines say so, and the charts keep every epoch.
        WebDriverWait(browser, 30).until(lambda d: page_state(d)["dense"]["state"] == "stopped")
        WebDriverWait(browser, 30).until(lambda d: page_state(d)["cnn"]["state"] == "finished")
        end = page_state(browser)
        record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
        assert end["cnn"]["line"] == f"finished: {CNN_EPOCHS} epochs (test accuracy {record['test_accuracy']:.2%})"
        stopped_at = end["dense"]["epoch"]
        assert stopped_at == DENSE_STOP_AFTER  # stopped in the epoch after: what it had finished stays
        assert end["dense"]["line"].startswith(f"stopped after epoch {stopped_at} of {DENSE_EPOCHS} (its files ")
        assert (end["cnn"]["points"], end["dense"]["points"]) == (CNN_EPOCHS, stopped_at)
        assert (end["cnn"]["seconds"], end["dense"]["seconds"]) == (CNN_EPOCHS, stopped_at)
        assert end["kernels"] == {"width": 8 * 6 - 1, "units": 10}  # all 32 kernels of 5×5; 10 dense units
        WebDriverWait(browser, 30).until(lambda d: page_state(d)["cnn"]["by"].startswith("answered by the finished"))
        assert browser.find_element("id", "cnn-label").text == "1"
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == [], errors
        requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert requests and all(url.startswith("http://127.0.0.1:") for url in requests), set(requests)
    finally:
        for process in (*runs.values(), server):
            if process.poll() is None:
                process.kill()
                process.communicate()


HELD_AFTER_EACH_EPOCH = """
HOLDS = pathlib.Path(HOLDS)


class Hook(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        (HOLDS / f"{epoch + 1}.held").touch()
        wait_until(lambda: (HOLDS / f"{epoch + 1}.go").exists())
"""


def test_each_epoch_leaves_a_whole_model_the_page_loads_and_the_run_clears_them(tmp_path):
    """What the page reads: after each epoch the run's folder holds epoch-K.keras, and row K of history.csv; safe mode
    loads it. The run is held after each epoch until the test has loaded that epoch's model; the finished run removes
    its folder."""
    import keras

    models, holds = tmp_path / "models", tmp_path / "holds"
    holds.mkdir()
    flags = ["--models-dir", str(models), "--results-dir", str(tmp_path / "results")]
    hook = fit_hook(HELD_AFTER_EACH_EPOCH, HOLDS=str(holds))
    run = start("train_dense.py", "--train-size", "3000", "--epochs", "3", "--batch-size", "128", *data_flags(), *flags,
                prelude=hook)
    try:
        weights = []
        for epoch in (1, 2, 3):
            deadline = time.monotonic() + 300
            while not (holds / f"{epoch}.held").exists():
                assert run.poll() is None and time.monotonic() < deadline, (epoch, last_words(run))
                time.sleep(0.05)
            found = live.progress("dense", models, tmp_path / "results")
            state = "testing" if epoch == 3 else "training"  # after the last epoch: the test, then the save
            assert (found.state, found.model_epoch, found.epochs) == (state, epoch, 3), found
            assert found.model_path.name == f"epoch-{epoch}.keras" and found.model_path.parent.name.startswith(
                ".dense-run-"
            )
            model = keras.saving.load_model(found.model_path, safe_mode=True)
            assert np.shape(model.get_layer("dense1").kernel) == (784, 512)
            weights.append(np.asarray(model.get_layer("dense1").kernel).sum())
            (holds / f"{epoch}.go").touch()
        assert run.wait(timeout=300) == 0, last_words(run)
    finally:
        if run.poll() is None:
            run.kill()
    assert len(set(weights)) == 3  # each epoch's own network
    assert not list(models.glob(".dense-run-*")) and (models / "dense.keras").is_file()
    assert live.progress("dense", models, tmp_path / "results").state == "finished"


# --- live.py (make live): the page first, then both scripts ------------------------------------------------------
def start_live(tmp_path: Path, *flags: str, data: Path | None = None, hook: str = "") -> subprocess.Popen[str]:
    """live.py in a folder of its own and a process group of its own, as a terminal runs it. ``hook``: a Hook
    callback (conftest.fit_hook's) that every fit() of the training scripts live.py starts gets, through a
    sitecustomize module that Python imports first in each of them."""
    data_flag = ["--data", str(data)] if data else data_flags()
    if not hook:
        return start("live.py", "--port", "0", *data_flag, *flags, cwd=tmp_path, new_session=True)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[0].endswith(('train_cnn.py', 'train_dense.py')):\n"
        + textwrap.indent(hook, "    ")
    )
    return subprocess.Popen(
        [sys.executable, str(ROOT / "live.py"), "--port", "0", *data_flag, *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"},
    )


SLICE = ("--", "--train-size", "2000", "--epochs", "2", "--batch-size", "128")


def test_live_py_serves_first_then_trains_both_and_keeps_the_page_up(tmp_path):
    process = start_live(tmp_path, *SLICE)
    try:
        url = read_until(process, "the live page: http://127.0.0.1:")[-1].split("page: ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "status", timeout=30) as response:  # up before any network trains
            assert json.loads(response.read())["networks"]["dense"]["state"] in ("not started", "starting")
        lines = read_until(process, "both networks are trained")
        assert any(line.startswith("cnn: test accuracy") for line in lines)
        assert lines.index(next(line for line in lines if line.startswith("cnn: test"))) < lines.index(
            next(line for line in lines if line.startswith("dense: test"))  # one after the other
        )
        with urllib.request.urlopen(url + "status", timeout=30) as response:
            networks = json.loads(response.read())["networks"]
        assert [networks[name]["state"] for name in ("cnn", "dense")] == ["finished", "finished"]
        assert (tmp_path / "models" / "cnn.keras").is_file() and (tmp_path / "models" / "dense.keras").is_file()
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal: the page ends
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, err[-3000:]
    assert err.strip().splitlines()[-1] == "live.py stopped; the trained networks are in models/"
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "status", timeout=5)


def test_ctrl_c_in_live_py_stops_the_training_and_the_page(tmp_path):
    process = start_live(tmp_path, "--", "--train-size", "20000", "--epochs", "8", "--batch-size", "128")
    try:
        url = read_until(process, "the live page: http://127.0.0.1:")[-1].split("page: ", 1)[1].split()[0]
        deadline = time.monotonic() + 300
        while not any(live.read_history_csv(path) for path in (tmp_path / "models").glob(".cnn-run-*/history.csv")):
            assert process.poll() is None and time.monotonic() < deadline, last_words(process)
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "stopped (SIGINT): no file was half-written; run the same command with --resume to go on" in err
    assert err.strip().splitlines()[-1].startswith("interrupted: the page and the training are stopped;"), err[-500:]
    assert not (tmp_path / "models" / "dense.keras").exists()  # the dense network never started
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "status", timeout=5)


def test_live_py_with_its_port_taken_is_one_line_and_trains_nothing(tmp_path):
    import socket

    from conftest import assert_one_line_error, run_script

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run_script("live.py", "--port", port, *data_flags(), cwd=tmp_path, timeout=120)
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{port}", "--port")
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "given", [("--models-dir", "elsewhere"), ("--results-dir", "elsewhere"), ("--data", "x.npz"), ("--data=x.npz",)]
)
def test_live_py_refuses_a_folder_flag_after_the_double_dash(tmp_path, given):
    """The page must watch where the scripts write and read: --models-dir, --results-dir and --data go to live.py."""
    from conftest import assert_one_line_error, run_script

    flags = ["--port", "0", *data_flags(), "--", "--epochs", "2", *given]  # a port and data of its own, were it let run
    result = run_script("live.py", *flags, cwd=tmp_path, timeout=120)
    assert_one_line_error(result, 2, f"give {given[0].split('=')[0]} before the --")
    assert not (tmp_path / "models").exists()


TINY = ("--train-size", "200", "--epochs", "1", "--batch-size", "128")


def url_of(process: subprocess.Popen[str]) -> str:
    return read_until(process, "the live page: http://127.0.0.1:")[-1].split("page: ", 1)[1].split()[0]


def group_is_gone(process: subprocess.Popen[str]) -> bool:
    """Nothing is left of the process group that live.py leads: not the page, not a training script."""
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return True
    return False


def end_group(process: subprocess.Popen[str]) -> None:
    """Whatever is left running (a failing test): gone, and live.py waited for."""
    if not group_is_gone(process):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


# Each run, as fit() begins, waits for the other to be in fit() too: run one after the other, the first would wait
# in vain (the hook gives up after 120 s, and the test fails).
TOGETHER = """
HOLDS = pathlib.Path(HOLDS)


class Hook(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        (HOLDS / pathlib.Path(sys.argv[0]).stem).touch()
        wait_until(lambda: all((HOLDS / name).exists() for name in ("train_cnn", "train_dense")), limit=120)
"""


def test_side_by_side_trains_both_networks_at_once(tmp_path, small_npz):
    models, holds = tmp_path / "models", tmp_path / "holds"
    holds.mkdir()
    process = start_live(tmp_path, "--side-by-side", "--", *TINY, data=small_npz,
                         hook=fit_hook(TOGETHER, HOLDS=str(holds)))
    try:
        url = url_of(process)
        lines = read_until(process, "both networks are trained")
        assert {line.split(":")[0] for line in lines if ": test accuracy" in line} == {"cnn", "dense"}, lines
        assert [network["state"] for network in status_of(url).values()] == ["finished", "finished"]
        process.send_signal(signal.SIGTERM)  # `kill PID` ends the page: nothing is training any more
        process.wait(timeout=60)
        gone = group_is_gone(process)
    finally:
        end_group(process)
    _, err = process.communicate(timeout=60)  # everything is gone: its pipes are closed
    assert process.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == "live.py stopped (SIGTERM); the trained networks are in models/", err[-500:]
    assert gone and (models / "cnn.keras").is_file() and (models / "dense.keras").is_file()


def test_one_script_failing_stops_the_other_run_and_the_page(tmp_path, small_npz):
    """--preset is train_cnn.py's alone: train_dense.py refuses it while train_cnn.py is on its way."""
    flags = ("--preset", "fast", "--train-size", "5000", "--epochs", "5", "--batch-size", "128")
    process = start_live(tmp_path, "--side-by-side", "--", *flags, data=small_npz)
    try:
        url = url_of(process)
        process.wait(timeout=180)
        gone = group_is_gone(process)
    finally:
        end_group(process)
    _, err = process.communicate(timeout=60)  # everything is gone: its pipes are closed
    assert process.returncode == 1, err[-3000:]
    assert "train_dense.py: error: unrecognized arguments: --preset fast" in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "error: train_dense.py ended with exit code 2 (its message is above); the page and the other run are "
        "stopped too"
    ), err[-3000:]
    assert 'live.py", line' not in err, err[-3000:]  # no traceback of its own
    assert gone, "a process live.py started still runs"  # train_cnn.py among them: it needs far longer to train
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "status", timeout=5)
    assert re.search(r"^stopped \(SIGTERM\)", err, re.MULTILINE), err[-3000:]  # train_cnn.py was stopped, in one line
    assert not (tmp_path / "models" / "cnn.keras").exists()


def test_sigterm_to_live_py_stops_the_training_and_the_page_in_one_line(tmp_path, small_npz):
    process = start_live(tmp_path, "--", "--train-size", "5000", "--epochs", "5", "--batch-size", "128", data=small_npz)
    try:
        url = url_of(process)
        read_until(process, "Epoch 1/5")  # train_cnn.py is in fit()
        assert list((tmp_path / "models").glob(".cnn-run-*")), "train_cnn.py trains without a folder of its own"
        process.send_signal(signal.SIGTERM)  # `kill PID` on live.py alone: a service manager, a CI timeout
        process.wait(timeout=120)
        gone = group_is_gone(process)
    finally:
        end_group(process)
    _, err = process.communicate(timeout=60)  # everything is gone: its pipes are closed
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("stopped (SIGTERM): the page and the training")]
    assert len(ours) == 1 and err.strip().splitlines()[-1] == ours[0], err[-3000:]
    assert gone, "a process live.py started still runs"
    assert "stopped (SIGTERM): no file was half-written" in err, err[-3000:]  # train_cnn.py's own line
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "status", timeout=5)


def status_of(url: str) -> dict:
    with urllib.request.urlopen(url + "status", timeout=30) as response:
        return json.loads(response.read())["networks"]


def test_live_py_host_is_where_the_page_listens(tmp_path, small_npz):
    """live.py --host ADDRESS: the page listens on that address (live.py hands it to serve.py), not on 127.0.0.1."""
    import socket
    import urllib.error

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a loopback address here")
    process = start_live(tmp_path, "--host", "127.0.0.2", "--", *TINY, data=small_npz)
    try:
        line = read_until(process, "the live page: http://", limit=120)[-1]
        url = line.split("page: ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.2:"), line
        assert sorted(status_of(url)) == ["cnn", "dense"]
        with pytest.raises(urllib.error.URLError):  # nothing listens on 127.0.0.1 at that port
            status_of(url.replace("127.0.0.2", "127.0.0.1"))
        # Ctrl-C once the first script has its handlers (it prints this after loading TensorFlow and MNIST): before
        # the interpreter has run a line of the script, Python itself answers Ctrl-C with a KeyboardInterrupt
        read_until(process, "training on ", limit=120)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal: the page and the training end
        process.wait(timeout=120)
        gone = group_is_gone(process)
    finally:
        end_group(process)
    _, err = process.communicate(timeout=60)
    assert gone and "Traceback" not in err, err[-3000:]
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: the page and the training are stopped;"), err[-500:]
