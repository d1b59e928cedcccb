"""Training as it happens, for serve.py's page: read from the files that the training scripts write anyway.

The scripts know nothing of the page. A run of ``train_NAME.py`` keeps a folder of its own,
``MODELS/.NAME-run-PID-XXXXXXXX/``, until its model is saved: ``config.json`` (its flags, from the start),
``epoch-K.keras`` (Keras' ModelCheckpoint: the network after epoch K) and ``history.csv`` (Keras' CSVLogger: a row
per finished epoch). ModelCheckpoint comes before CSVLogger in the script's callbacks, so when row K is there,
``epoch-K.keras`` is whole: the page loads the epoch of the last whole row and never a file still being written. A
run that ends well leaves ``MODELS/NAME.keras``, ``RESULTS/NAME_run.json`` and ``RESULTS/NAME_history.json``, then
removes its folder.

No lock and no PID: a run's folder that has changed in the last ``QUIET`` seconds (or three of its slowest epochs)
is training; one that has not is stopped (Ctrl-C, kill -9: ``--resume`` goes on); a saved model newer than every
run folder is the finished run. Everything here only reads.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

import compare
from mnistlab.explain import Explainer
from mnistlab.inference import first_conv_kernels, network_inside

TEMPLATES_SHOWN = 10  # dense units whose first-layer weights the page draws as 28×28 images
QUIET = 120.0  # seconds without a change after which a run counts as stopped (a first epoch can take a minute)


@dataclass
class Progress:
    """Where one network's training stands, as the files say."""

    name: str
    state: str  # "not started", "starting", "training", "testing", "stopped", "diverged" or "finished"
    epochs: int | None = None  # of the run, from its flags
    history: list[dict[str, float]] = field(default_factory=list)  # one row per finished epoch
    test_accuracy: float | None = None
    model_path: Path | None = None  # the newest whole model file: an epoch's, or the finished one
    model_epoch: int | None = None

    @property
    def line(self) -> str:
        done, of = len(self.history), f" of {self.epochs}" if self.epochs else ""
        accuracy = f"test accuracy {self.test_accuracy:.2%}" if isinstance(self.test_accuracy, float) else ""
        epochs = f"{done} epoch{'s' if done != 1 else ''}" if done else ""
        return {
            "not started": f"not started: run `{compare.MODELS[self.name]}`",
            "starting": "starting",
            "training": f"epoch {done + 1}{of}" + (f" (epoch {done} done)" if done else ""),
            "testing": f"epoch {done}{of} done: testing and saving",
            "stopped": f"stopped after epoch {done}{of} (its files have not changed for a while): run the same "
            "command with --resume to go on"
            if done
            else f"stopped in epoch 1{of}, before it finished: run the same command again",
            "diverged": f"diverged in epoch {done}{of}: the loss is not a number; try a lower --learning-rate",
            "finished": "finished" + (f": {epochs}" if epochs else "") + (f" ({accuracy})" if accuracy else ""),
        }[self.state]

    def as_json(self) -> dict[str, Any]:
        """Plain JSON (no NaN: a diverged epoch's numbers are left out), seconds of training summed per epoch."""
        seconds, rows = 0.0, []
        for number, row in enumerate(self.history, start=1):
            seconds += row.get("epoch_seconds", math.nan)
            values = {key: row.get(key, math.nan) for key in ("accuracy", "loss", "val_accuracy", "val_loss")}
            values["seconds"] = seconds
            rows.append({"epoch": number} | {key: round(v, 6) for key, v in values.items() if math.isfinite(v)})
        return {
            "state": self.state,
            "line": self.line,
            "epoch": len(self.history),
            "epochs": self.epochs,
            "test_accuracy": self.test_accuracy if isinstance(self.test_accuracy, float) else None,
            "history": rows,
        }


def progress(name: str, models_dir: Path, results_dir: Path, quiet: float = QUIET) -> Progress:
    """One look at the files of network ``name`` (``cnn`` or ``dense``)."""
    final = models_dir / f"{name}.keras"
    runs = [(changed(folder), folder) for folder in models_dir.glob(f".{name}-run-*") if folder.is_dir()]
    if not runs or max(runs)[0] <= changed(final):
        return finished(name, final, results_dir)
    last_change, folder = max(runs)
    config = read_json(folder / "config.json")
    epochs = config.get("epochs") if config else None
    history = read_history_csv(folder / "history.csv")
    slowest = max((row.get("epoch_seconds", 0.0) for row in history), default=0.0)
    if history and not math.isfinite(history[-1].get("loss", math.nan)):
        state = "diverged"
    elif time.time() - last_change > max(quiet, 3 * slowest):
        state = "stopped"
    elif config is None:
        state = "starting"
    else:
        state = "testing" if epochs and len(history) >= epochs else "training"
    model = folder / f"epoch-{len(history)}.keras"  # whole: its row is written after it
    found = (model, len(history)) if history and model.is_file() else (None, None)
    return Progress(name, state, epochs, history, None, *found)


def changed(path: Path) -> float:
    """When ``path`` last changed (a folder: the newest file in it), in seconds since the epoch; -inf if it is gone."""
    try:
        times = [path.stat().st_mtime, *(child.stat().st_mtime for child in path.iterdir())] if path.is_dir() else []
        return max(times) if times else path.stat().st_mtime
    except OSError:
        return -math.inf


def finished(name: str, final: Path, results_dir: Path) -> Progress:
    """The last finished run: its model, and its records when they are there."""
    if not final.is_file():
        return Progress(name, "not started")
    record = read_json(results_dir / f"{name}_run.json") or {}
    history = (read_json(results_dir / f"{name}_history.json") or {}).get("epochs", [])
    history = history if isinstance(history, list) and all(isinstance(row, dict) for row in history) else []
    epochs = record.get("epochs") if isinstance(record.get("epochs"), int) else len(history) or None
    return Progress(name, "finished", epochs, history, record.get("test_accuracy"), final, len(history) or None)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or being written
        return None
    return value if isinstance(value, dict) else None


def read_history_csv(path: Path) -> list[dict[str, float]]:
    """Keras' CSVLogger file: whole lines only; after --resume, an epoch's last row wins."""
    try:
        text = path.read_text()
    except OSError:
        return []
    whole = text[: text.rfind("\n") + 1]
    rows: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(io.StringIO(whole)):
        try:
            values = {key: float(value) for key, value in row.items() if key and value not in (None, "", "NA")}
        except ValueError:
            continue
        if "epoch" in values:
            rows[int(values["epoch"])] = values
    return [rows[epoch] for epoch in sorted(rows)]


def first_layer(model: keras.Model) -> dict[str, Any] | None:
    """What the first layer has learned, as small images scaled to -1…1 (each by its own largest weight): every
    kernel of a CNN's first convolution, or the 784 input weights of a few units of a dense network's first layer."""
    if any(isinstance(layer, keras.layers.Conv2D) for layer in network_inside(model).layers):
        conv, kernels = first_conv_kernels(model)
        return {"kind": "kernels", "layer": conv.name, "images": [scaled(kernel) for kernel in kernels]}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.kernel.shape[0] == 28 * 28:
            kernel = np.asarray(layer.kernel, np.float64)  # (784, units)
            shown = range(min(TEMPLATES_SHOWN, kernel.shape[1]))
            return {
                "kind": "units",
                "layer": layer.name,
                "units": kernel.shape[1],
                "images": [scaled(kernel[:, unit].reshape(28, 28)) for unit in shown],
            }
    return None


def scaled(values: np.ndarray) -> list[list[float]]:
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(values).max())
    return np.round(values / peak if peak > 0 else values, 3).tolist()


@dataclass
class Loaded:
    key: tuple[Path, int, int]  # path, mtime, size: a new file is a new key
    about: dict[str, Any]  # which epoch, whether the run finished: shown with every answer
    weights: dict[str, Any] | None


class Watcher:
    """Each network's progress and its newest whole model, loaded (safe mode) when its file changes and only when
    someone looks: with no page open, the server reads nothing. The explainer is kept up to date with them."""

    def __init__(self, models_dir: Path, results_dir: Path, explainer: Explainer) -> None:
        self.models_dir, self.results_dir, self.explainer = Path(models_dir), Path(results_dir), explainer
        self.loaded: dict[str, Loaded] = {}
        self.problems: dict[str, str] = {}
        self.lock = threading.Lock()
        self.last: tuple[float, dict[str, Any]] = (-math.inf, {})

    def look(self, unless_within: float = 0.0) -> dict[str, Any]:
        """Every network's progress and model, as plain JSON-able data; the last look's, if it is not older than
        ``unless_within`` seconds (a drawing sends several requests a second: one look serves them)."""
        with self.lock:
            if time.monotonic() - self.last[0] > unless_within:
                self.last = (time.monotonic(), {name: self.look_at_safely(name) for name in compare.MODELS})
            return self.last[1]

    def look_at_safely(self, name: str) -> dict[str, Any]:
        """A file that is not what the scripts write costs its network's panel, never the page or the server."""
        try:
            return self.look_at(name)
        except Exception as error:
            problem = f"its files in {self.models_dir} could not be read ({type(error).__name__}: {error})"
            self.report(name, problem)
            empty = {"epoch": 0, "epochs": None, "test_accuracy": None, "history": [], "model": None}
            return {"state": "unreadable", "line": "unreadable", **empty, "first_layer": None, "problem": problem}

    def look_at(self, name: str) -> dict[str, Any]:
        now = progress(name, self.models_dir, self.results_dir)
        answer = now.as_json()
        if now.model_path is None or now.state == "diverged":  # none yet (a new run's first epoch), or no use
            self.forget(name)
        else:
            self.load(name, now)
        loaded = self.loaded.get(name)
        answer["model"] = None if loaded is None else loaded.about
        answer["first_layer"] = None if loaded is None else loaded.weights
        answer["problem"] = self.problems.get(name)
        return answer

    def load(self, name: str, now: Progress) -> None:
        path = now.model_path
        try:
            stat = path.stat()
            key = (path, stat.st_mtime_ns, stat.st_size)
            if name in self.loaded and self.loaded[name].key == key:
                return
            model = compare.load_model(str(path), compare.MODELS[name])
        except FileNotFoundError:  # replaced by the next epoch's between the look and the load: next look
            return
        except SystemExit as error:  # not a readable model: say so on the page and once here, keep the old one
            if not path.is_file():  # no: replaced between the look and the load
                return
            self.report(name, str(error).removeprefix("error: "))
            return
        self.problems.pop(name, None)
        about = {"epoch": now.model_epoch, "final": now.state == "finished", "version": f"{key[1]}-{key[2]}"}
        self.loaded[name] = Loaded(key, about, first_layer(model))
        self.explainer.update(name, model, about)

    def report(self, name: str, problem: str) -> None:
        """On the page at every look; on the terminal once, not every second."""
        if self.problems.get(name) != problem:
            print(f"serve.py: {name}: {problem}", file=sys.stderr, flush=True)
        self.problems[name] = problem

    def forget(self, name: str) -> None:
        if self.loaded.pop(name, None) is not None:
            self.explainer.update(name, None, None)
        self.problems.pop(name, None)
