"""serve.py: the live page's API through urllib, every bad request, path traversal, and a real browser drawing."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    ROOT,
    SMALL_EPOCHS,
    STROKES,
    assert_one_line_error,
    data_flags,
    draw,
    output_flags,
    read_line,
    run_script,
    start,
)

from mnistlab.images import canvas_png
from mnistlab.live import QUIET
from mnistlab.server import NO_NETWORK, DemoServer

DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """serve.py on a free port of 127.0.0.1, with the models trained by the shared fixture."""
    results = tmp_path_factory.mktemp("serve-results")
    (results / "comparison.png").write_bytes((DOCS / "comparison.png").read_bytes())
    for record in trained["results"].glob("*_*.json"):  # the runs' records: the page shows the finished runs
        (results / record.name).write_bytes(record.read_bytes())
    process = start(  # as from a terminal: Ctrl-C reaches it even under `make test &`
        "serve.py", "--port", "0", "--models-dir", str(trained["models"]), "--results-dir", str(results)
    )
    line = read_line(process, time.monotonic() + 120, "its address")  # "serving ... on http://127.0.0.1:PORT/ ..."
    if "http://" not in line:
        process.kill()
        pytest.fail(f"serve.py did not start: {line!r} {process.communicate()[1][-3000:]}")
    url = line.split(" on ", 1)[1].split()[0]
    yield {"url": url, "process": process, "port": int(url.rsplit(":", 1)[1].strip("/")), "results": results}
    process.send_signal(signal.SIGINT)  # Ctrl-C is how a server is meant to end: exit 0, one line
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and err.strip().splitlines()[-1] == "serve.py stopped", err[-2000:]


def post(url: str, body: bytes | dict, path: str = "predict") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def still_up(server) -> None:
    with urllib.request.urlopen(server["url"], timeout=30) as response:
        assert response.status == 200 and b"<canvas" in response.read()


EASY = (0, 1, 2, 3)  # the first test digits: 7, 2, 1, 0


def test_answer_has_everything_the_page_shows(server, mnist):
    status, answer = post(server["url"], {"pixels": mnist.x_test[0].tolist()})
    assert status == 200, answer
    for name in ("cnn", "dense"):
        probabilities = answer[name]["probabilities"]
        assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-4
        assert answer[name]["label"] == int(np.argmax(probabilities))
        assert np.array(answer[name]["saliency"]).shape == (28, 28)
        assert answer[name]["model"]["epoch"] == SMALL_EPOCHS and answer[name]["model"]["final"] is True
    assert np.array_equal(np.array(answer["preprocessed"]), mnist.x_test[0])  # pixels are used as they are
    maps = answer["feature_maps"]
    assert [m["shape"] for m in maps] == [[24, 24, 32], [12, 12, 32], [10, 10, 64]]
    assert all(np.array(m["channels"]).shape == (8, *m["shape"][:2]) for m in maps)
    assert [row["shift"] for row in answer["shifted"]] == list(range(7))
    assert answer["shifted"][0]["cnn"]["label"] == answer["cnn"]["label"]


def test_status_shows_the_finished_runs(server, trained):
    """Nothing trains: each network's line, its history and its first layer come from the finished run."""
    with urllib.request.urlopen(server["url"] + "status", timeout=30) as response:
        networks = json.loads(response.read())["networks"]
    for name in ("cnn", "dense"):
        network = networks[name]
        record = json.loads((trained["results"] / f"{name}_run.json").read_text())  # copied by the fixture
        assert network["state"] == "finished" and network["epoch"] == network["epochs"] == SMALL_EPOCHS, network
        assert network["line"] == f"finished: {SMALL_EPOCHS} epochs (test accuracy {record['test_accuracy']:.2%})"
        assert [row["epoch"] for row in network["history"]] == list(range(1, SMALL_EPOCHS + 1))
        seconds = [row["seconds"] for row in network["history"]]
        assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(record["training_seconds"], abs=0.01)
        assert network["history"][-1]["val_accuracy"] > 0.85 and network["problem"] is None
    kernels, units = networks["cnn"]["first_layer"], networks["dense"]["first_layer"]
    assert kernels["kind"] == "kernels" and kernels["layer"] == "conv1" and np.shape(kernels["images"]) == (32, 5, 5)
    assert units["kind"] == "units" and units["units"] == 512 and np.shape(units["images"]) == (10, 28, 28)
    for images in (kernels["images"], units["images"]):  # each image scaled by its own largest weight
        assert np.allclose(np.abs(images).max(axis=(1, 2)), 1.0)


@pytest.mark.parametrize("index", EASY)
def test_real_digit_as_pixels_and_as_a_canvas_png(server, mnist, index):
    label = int(mnist.y_test[index])
    _, as_pixels = post(server["url"], {"pixels": mnist.x_test[index].tolist()})
    assert as_pixels["cnn"]["label"] == label
    # Inverted (black ink), enlarged to 280×280, on a transparent background: what the page's canvas sends.
    status, as_png = post(server["url"], {"image": data_url(canvas_png(mnist.x_test[index]))})
    assert status == 200, as_png
    assert as_png["cnn"]["label"] == label
    assert as_pixels["dense"]["label"] == label and as_png["dense"]["label"] == label  # both networks answer
    assert np.array(as_png["preprocessed"]).max() == 255  # prepared: white ink on black


# --- what an answer shows: saliency, shifts ---------------------------------------------------------------------
def within(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` grown by ``pixels`` in every direction, diagonals included."""
    grown = mask.copy()
    for _ in range(pixels):
        padded, grown = np.pad(grown, 1), np.zeros_like(mask)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


def test_saliency_is_there_and_the_cnns_lies_on_the_ink(server, mnist):
    """Which pixels each answer depends on: both maps hold something; the CNN's gathers on and around the strokes,
    the dense network's reaches further over the empty paper (as the page's note says)."""
    near_ink: dict[str, list[float]] = {"cnn": [], "dense": []}
    for index in EASY:
        digit = mnist.x_test[index]
        status, answer = post(server["url"], {"pixels": digit.tolist()})
        assert status == 200, answer
        near = within(digit > 0, 2)  # the strokes and 2 pixels around them: a quarter to a half of the field here
        for name, fractions in near_ink.items():
            saliency = np.array(answer[name]["saliency"])
            assert saliency.min() >= 0 and saliency.max() == 1.0, name  # scaled by its largest value: not all zero
            assert (saliency > 0.1).sum() >= 10, name  # not one stray pixel
            fractions.append(saliency[near].sum() / saliency.sum())
        assert near_ink["cnn"][-1] > near.mean() + 0.15, (index, near_ink["cnn"][-1], near.mean())
    assert np.mean(near_ink["cnn"]) > 0.6, near_ink  # most of the CNN's saliency lies on or next to the ink
    assert np.mean(near_ink["cnn"]) > np.mean(near_ink["dense"]) + 0.05, near_ink


def test_each_shift_is_the_answer_to_the_digit_moved_that_far(server, mnist):
    """Row k of `shifted` is what both networks answer to the digit moved k pixels right and down (sent as pixels,
    which are used as they are): every shift is another input."""
    digit = mnist.x_test[0]
    _, answer = post(server["url"], {"pixels": digit.tolist()})
    rows = answer["shifted"]
    for row in rows:
        moved = np.zeros_like(digit)
        moved[row["shift"] :, row["shift"] :] = digit[: 28 - row["shift"], : 28 - row["shift"]]
        status, direct = post(server["url"], {"pixels": moved.tolist()})
        assert status == 200, direct
        for name in ("cnn", "dense"):
            assert row[name]["label"] == direct[name]["label"], (row, name)
            assert row[name]["confidence"] == pytest.approx(max(direct[name]["probabilities"]), abs=1e-3), (row, name)
    for name in ("cnn", "dense"):  # and the answers move with it
        assert len({(row[name]["label"], row[name]["confidence"]) for row in rows}) > 1, rows


def too_big() -> bytes:
    return json.dumps({"image": "data:image/png;base64," + "A" * (3 * 1024 * 1024)}).encode()


BAD = {
    "over 2 MB": (too_big(), 413, "over 2 MB"),
    "not JSON": (b"{image:", 400, "not JSON"),
    "JSON list": (b"[1, 2]", 400, "exactly one of"),
    "both keys": ({"image": "x", "pixels": []}, 400, "exactly one of"),
    "not a data URL": ({"image": "http://example.com/x.png"}, 400, "data URL"),
    "bad base64": ({"image": "data:image/png;base64,@@@"}, 400, "base64"),
    "not an image": ({"image": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, 400, "not an image"),
    "blank canvas": ({"image": data_url(canvas_png(np.zeros((28, 28), np.uint8)))}, 400, "no digit found"),
    "wrong shape": ({"pixels": [[0] * 28] * 27}, 400, "28 rows of 28"),
    "NaN": (b'{"pixels": [' + b",".join([b"[" + b",".join([b"NaN"] * 28) + b"]"] * 28) + b"]}", 400, "finite"),
    "text pixels": ({"pixels": [["a"] * 28] * 28}, 400, "finite"),
    "out of range": ({"pixels": [[300] * 28] * 28}, 400, "between 0 and 255"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_its_status_and_the_server_stays_up(server, case):
    body, status, fragment = BAD[case]
    got, answer = post(server["url"], body)
    assert got == status, answer
    assert list(answer) == ["error"] and "\n" not in answer["error"] and fragment in answer["error"], answer
    still_up(server)


def raw(server, method: str, path: str) -> tuple[int, bytes]:
    """A request sent exactly as written (urllib would tidy the path)."""
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


@pytest.mark.parametrize(
    "path",
    [
        "/../mnistlab/records.py",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/etc/passwd",
        "/web/app.js",
        "/results/../../serve.py",
        "/results/cnn_run.json",
        "/app.js/../../serve.py",
    ],
)
def test_nothing_outside_the_page_is_served(server, path):
    status, body = raw(server, "GET", path)
    assert status == 404, (path, body[:200])
    assert b"root:" not in body and b"import" not in body and b"def " not in body


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW"])
def test_other_methods_are_405(server, method):
    status, _ = raw(server, method, "/predict")
    assert status == 405
    still_up(server)


def test_unknown_path_is_404_and_links_show_what_exists(server):
    status, _ = raw(server, "GET", "/nothing-here")
    assert status == 404
    with urllib.request.urlopen(server["url"] + "status", timeout=30) as response:
        links = json.loads(response.read())["links"]
    assert links == {"/results/report.html": False, "/results/comparison.png": True}
    status, body = raw(server, "GET", "/results/comparison.png")
    assert status == 200 and body.startswith(b"\x89PNG")
    assert raw(server, "GET", "/results/report.html")[0] == 404  # not made: not served


def test_post_without_content_length_is_411(server):
    status, body = raw(server, "POST", "/predict")  # no body, no Content-Length
    assert status == 411 and json.loads(body) == {"error": "a Content-Length header is required"}, body
    still_up(server)


@pytest.mark.parametrize("path", ["status", "", "predict/", "results/comparison.png"])
def test_post_to_another_path_is_404(server, mnist, path):
    status, answer = post(server["url"], {"pixels": mnist.x_test[0].tolist()}, path=path)
    assert status == 404 and answer == {"error": "POST goes to /predict"}, answer


def snapshot(*folders: Path) -> dict[Path, tuple[int, int]]:
    """Every file and folder below ``folders`` (hidden ones too), with its size and modification time."""
    found = [*folders, *(path for folder in folders for path in folder.rglob("*"))]
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) for path in found}


def test_no_request_writes_a_file(server, trained, mnist):
    folders = (trained["models"], server["results"])
    before = snapshot(*folders)
    assert len(before) > 4, before  # the models, the records, comparison.png
    for path in ("/", "/app.js", "/status", "/results/comparison.png", "/results/report.html", "/../x", "/nothing"):
        raw(server, "GET", path)
    raw(server, "PUT", "/predict")
    canvas = data_url(canvas_png(mnist.x_test[2]))
    for body in ({"pixels": mnist.x_test[1].tolist()}, {"image": canvas}, b"{x", too_big()):
        post(server["url"], body)
    assert snapshot(*folders) == before


@contextlib.contextmanager
def serving(models: Path, results: Path):
    """serve.py's server in this process, on a free port of 127.0.0.1: for tests that change what is behind it."""
    httpd = DemoServer(("127.0.0.1", 0), models, results)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def status_of(url: str) -> dict:
    with urllib.request.urlopen(url + "status", timeout=30) as response:
        return json.loads(response.read())["networks"]


class FailsOnce:
    """An explainer whose first answer fails, as a bug deep inside it would; then it answers as before."""

    def __init__(self, explainer) -> None:
        self.explainer, self.failed = explainer, False

    def explain(self, digit: np.ndarray) -> dict:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a fault deep inside the handler")
        return self.explainer.explain(digit)


def test_a_fault_inside_the_handler_is_500_and_the_next_request_is_answered(trained, tmp_path, mnist, capsys):
    with serving(trained["models"], tmp_path) as httpd:
        httpd.explainer = FailsOnce(httpd.explainer)
        status, answer = post(httpd.url, {"pixels": mnist.x_test[0].tolist()})
        assert status == 500 and answer == {"error": "internal error (RuntimeError)"}, answer
        status, answer = post(httpd.url, {"pixels": mnist.x_test[0].tolist()})
        assert status == 200 and answer["cnn"]["label"] == answer["dense"]["label"] == 7, answer
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("serve.py:")]
    assert said == ["serve.py: /predict failed: RuntimeError: a fault deep inside the handler"]


def test_host_is_honoured_and_sigterm_ends_the_server_in_one_line(tmp_path):
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a loopback address here")
    process = start("serve.py", "--host", "127.0.0.2", "--port", "0", *output_flags(tmp_path))
    try:
        line = read_line(process, time.monotonic() + 120, "its address")
        assert line.startswith("serving the CNN and the dense network on http://127.0.0.2:"), line
        url = line.split(" on ", 1)[1].split()[0]
        assert status_of(url)["cnn"]["state"] == "not started"
        with pytest.raises(urllib.error.URLError):  # nothing listens on 127.0.0.1 at that port
            status_of(url.replace("127.0.0.2", "127.0.0.1"))
        process.send_signal(signal.SIGTERM)  # `kill PID`: a service manager stopping it
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "serve.py stopped", err[-2000:]
    assert err.count("stopped") == 1, err[-2000:]


# --- safe mode: a model file that holds code is refused ---------------------------------------------------------
@pytest.fixture(scope="module")
def code_in_a_model(trained, tmp_path_factory):
    """The trained models and records, but cnn.keras replaced by a model holding code (a Lambda layer's Python
    function): what a downloaded .keras file can carry. Loading it outside safe mode would run that code."""
    import keras

    folder = tmp_path_factory.mktemp("code-in-a-model")
    models, results = folder / "models", folder / "results"
    shutil.copytree(trained["models"], models)
    shutil.copytree(trained["results"], results)
    inputs = keras.Input((28, 28, 1))
    scaled = keras.layers.Lambda(lambda images: images / 255.0, name="code")(inputs)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(scaled))).save(
        models / "cnn.keras"
    )
    return {"models": models, "results": results}


@pytest.mark.parametrize("script", ["compare.py", "predict.py"])
def test_a_model_holding_code_is_refused_in_one_line(code_in_a_model, script, tmp_path, mnist):
    models = ["--models-dir", str(code_in_a_model["models"])]
    if script == "compare.py":  # it reads the runs' records first
        records = shutil.copytree(code_in_a_model["results"], tmp_path / "r")
        args = [*models, "--results-dir", str(records), *data_flags()]
    else:
        (tmp_path / "seven.png").write_bytes(canvas_png(mnist.x_test[0]))
        args = [str(tmp_path / "seven.png"), *models, "--results-dir", str(tmp_path / "r")]
    result = run_script(script, *args, timeout=300)
    assert_one_line_error(result, 1, "cnn.keras", "Lambda")
    line = result.stderr.strip().splitlines()[-1]  # whole: the file, the reason and what to do, not cut short
    assert line.startswith("error: ") and line.endswith(
        "cnn.keras holds Python code (a Lambda layer), which safe mode does not run; run `python train_cnn.py` "
        "again, or load it yourself only if you trust where it came from"
    ), line


def test_the_page_refuses_a_model_holding_code_and_answers_with_the_other(code_in_a_model, mnist, capsys):
    """serve.py's server (serve.py --bench loads the models as predict.py does): one line on its terminal, the
    problem on the page, and the dense network answers alone."""
    with serving(code_in_a_model["models"], code_in_a_model["results"]) as httpd:
        networks = status_of(httpd.url)
        assert networks["cnn"]["model"] is None and "Lambda" in networks["cnn"]["problem"], networks["cnn"]
        assert networks["dense"]["model"]["final"] is True and networks["dense"]["problem"] is None
        status, answer = post(httpd.url, {"pixels": mnist.x_test[0].tolist()})
        assert status == 200 and "cnn" not in answer and answer["dense"]["label"] == 7, answer
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("serve.py:")]
    assert len(said) == 1 and "cnn.keras holds Python code (a Lambda layer)" in said[0], said


# --- the page's rule: a stopped run's backup wins over the last finished model ---------------------------------
def test_a_stopped_runs_backup_wins_over_the_last_finished_model(trained, tmp_path, mnist):
    """A new run of train_cnn.py stopped after epoch 2 of 5 (Ctrl-C: its folder stays, quiet for longer than the page
    waits), newer than the model and records of an earlier finished run: the page shows the stopped run, and its
    network answers."""
    models, results = tmp_path / "models", tmp_path / "results"
    folder = models / ".cnn-run-4242"
    folder.mkdir(parents=True)
    shutil.copytree(trained["results"], results)  # the finished run's records: 3 epochs, its test accuracy
    shutil.copy(trained["models"] / "cnn.keras", models / "cnn.keras")
    shutil.copy(trained["models"] / "cnn.keras", folder / "epoch-2.keras")
    (folder / "config.json").write_text(json.dumps({"epochs": 5, "preset": "fast"}))
    (folder / "history.csv").write_text(
        "epoch,accuracy,epoch_seconds,loss,val_accuracy,val_loss\n0,0.9,2.0,0.3,0.91,0.3\n1,0.95,2.0,0.2,0.95,0.2\n"
    )
    now = time.time()
    for path, age in [(models / "cnn.keras", 2 * QUIET), *((path, QUIET + 60) for path in [*folder.iterdir(), folder])]:
        os.utime(path, (now - age, now - age))
    epoch_file = (folder / "epoch-2.keras").stat()
    with serving(models, results) as httpd:
        cnn = status_of(httpd.url)["cnn"]
        assert (cnn["state"], cnn["epoch"], cnn["epochs"]) == ("stopped", 2, 5), cnn
        assert cnn["line"] == (
            "stopped after epoch 2 of 5 (its files have not changed for a while): run the same command with --resume "
            "to go on"
        )
        assert [row["epoch"] for row in cnn["history"]] == [1, 2] and cnn["test_accuracy"] is None
        assert cnn["model"] == {"epoch": 2, "final": False, "version": f"{epoch_file.st_mtime_ns}-{epoch_file.st_size}"}
        status, answer = post(httpd.url, {"pixels": mnist.x_test[0].tolist()})
        assert status == 200 and answer["cnn"]["model"] == cnn["model"], answer.get("cnn", answer)


def test_without_models_the_page_waits_for_training(tmp_path):
    """serve.py starts before any network exists: the page names the commands, and /predict says what to do."""
    process = start("serve.py", "--port", "0", *output_flags(tmp_path))
    try:
        line = read_line(process, time.monotonic() + 120, "its address")
        assert "http://127.0.0.1:" in line, (line, process.stderr.read() if process.poll() is not None else "")
        url = line.split(" on ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "status", timeout=30) as response:
            networks = json.loads(response.read())["networks"]
        for name in ("cnn", "dense"):
            assert networks[name]["state"] == "not started" and networks[name]["model"] is None, networks[name]
            assert f"run `python train_{name}.py`" in networks[name]["line"]
        status, answer = post(url, {"pixels": [[0] * 28] * 28})
        assert status == 503 and answer == {"error": NO_NETWORK}, answer
        assert "train_cnn.py" in NO_NETWORK and "train_dense.py" in NO_NETWORK
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0 and err.strip().splitlines()[-1] == "serve.py stopped", err[-2000:]


BENCH_ROW = re.compile(
    r" +(1 client|8 clients at once) +(\d+) requests: p50 ([\d.]+) ms, p95 ([\d.]+) ms, p99 ([\d.]+) ms, "
    r"max ([\d.]+) ms; (\d+) errors"
)


def test_bench_with_trained_models_prints_p50_p95_and_no_errors(trained, small_npz):
    """serve.py --bench with both trained models: one client, then 8 at once, each a line with p50 ≤ p95 ≤ p99 ≤ max
    and 0 errors. Fewer requests than its 200 and 1,000 (a runpy wrapper sets them): the report is what is checked,
    not the speed."""
    runner = (
        "import functools, runpy, sys\nfrom mnistlab import server\n"
        "server.latency_report = functools.partial(server.latency_report, single=30, total=80)\n"
        "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    )
    flags = ["--models-dir", str(trained["models"]), "--results-dir", str(trained["results"]), "--data", str(small_npz)]
    result = subprocess.run(
        [sys.executable, "-c", runner, str(ROOT / "serve.py"), "--bench", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("POST /predict, both models, a ") for line in lines), result.stdout
    rows = {match[1]: match.groups()[1:] for match in map(BENCH_ROW.fullmatch, lines) if match}
    assert sorted(rows) == ["1 client", "8 clients at once"], result.stdout
    for name, requests in (("1 client", 30), ("8 clients at once", 80)):
        count, p50, p95, p99, longest, errors = rows[name]
        assert (int(count), int(errors)) == (requests, 0), (name, rows[name])
        assert 0 < float(p50) <= float(p95) <= float(p99) <= float(longest), (name, rows[name])


def test_bench_without_models_is_one_line(tmp_path):
    result = run_script("serve.py", "--bench", "--models-dir", str(tmp_path))
    assert_one_line_error(result, 1, "cnn.keras not found", "python train_cnn.py")
    assert "serving" not in result.stdout


@pytest.mark.parametrize(("port", "fragment"), [("70000", "between 0 and 65535"), ("http", "expected a whole number")])
def test_bad_port_is_a_usage_line(tmp_path, port, fragment):
    result = run_script("serve.py", "--port", port, "--models-dir", str(tmp_path))
    assert_one_line_error(result, 2, "--port", fragment)


def test_port_in_use_is_one_line(server, trained):
    result = run_script("serve.py", "--port", str(server["port"]), "--models-dir", str(trained["models"]))
    assert_one_line_error(result, 1, f"cannot listen on 127.0.0.1:{server['port']}", "--port")


# --- a real browser ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("digit", list(STROKES))
def test_drawing_in_a_real_browser(server, browser, digit, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server["url"])
    draw(browser, STROKES[digit])
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element("id", "cnn-label").text.strip() not in ("", "–")
        and d.find_element("id", "dense-label").text.strip() not in ("", "–")
    )
    # The answer to the whole drawing comes last (the page asks while drawing, then once on release).
    label = browser.find_element("id", "cnn-label")
    WebDriverWait(browser, 15).until(lambda _: label.text.strip() == digit, message=f"CNN says {label.text!r}")
    assert len(browser.find_elements("css selector", "#maps canvas")) == 24  # 3 layers × 8 maps
    assert browser.find_element("id", "links").text.strip() == "the comparison figure"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
    requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requests and all(url.startswith("http://127.0.0.1:") for url in requests), requests
    shot = tmp_path / f"demo-{digit}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
