"""serve.py: the live page's API through urllib, every bad request, path traversal, and a real browser drawing."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import ROOT, SMALL_EPOCHS, STROKES, assert_one_line_error, draw, output_flags, run_script, start

from mnistlab.images import canvas_png
from mnistlab.server import NO_NETWORK

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
    line = process.stdout.readline()  # "serving the CNN and the dense network on http://127.0.0.1:PORT/ ..."
    if "http://" not in line:
        process.kill()
        pytest.fail(f"serve.py did not start: {line!r} {process.communicate()[1][-3000:]}")
    url = line.split(" on ", 1)[1].split()[0]
    yield {"url": url, "process": process, "port": int(url.rsplit(":", 1)[1].strip("/"))}
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
    assert np.array(as_png["preprocessed"]).max() == 255  # prepared: white ink on black


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


def test_without_models_the_page_waits_for_training(tmp_path):
    """serve.py starts before any network exists: the page names the commands, and /predict says what to do."""
    process = start("serve.py", "--port", "0", *output_flags(tmp_path))
    try:
        line = process.stdout.readline()
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
