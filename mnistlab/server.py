"""The local web server behind serve.py: the page's own files, two result files it links to, GET /status (where
each network's training stands, read by :mod:`mnistlab.live`) and POST /predict.

Only names in :data:`PAGES` and :data:`RESULTS` are ever served — looked up in a table, never joined to a path —
so no URL (``/../``, ``%2e%2e/``, ``//etc/passwd``) can reach another file. Every bad request gets its status code
and a one-line JSON error; no request can take the server down.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from mnistlab import UserError
from mnistlab.explain import Explainer
from mnistlab.images import FIELD, ImageError, decode_grayscale, mnist_style
from mnistlab.live import Watcher

MAX_BODY = 2 * 1024 * 1024  # a 280×280 canvas is ~20 KB as PNG; a large photo as a data URL is still well below
DRAIN_LIMIT = 16 * 1024 * 1024  # read (and drop) at most this much of a refused body, so the client hears the 413
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PAGES = {  # URL path -> (file in web/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
RESULTS = {  # URL path -> (file in the results folder, content type); served when it exists
    "/results/report.html": ("report.html", "text/html; charset=utf-8"),
    "/results/comparison.png": ("comparison.png", "image/png"),
}
NO_NETWORK = "no network has finished an epoch yet: run python train_cnn.py and python train_dense.py"
USAGE = 'send JSON {"image": "data:image/png;base64,..."} or {"pixels": [28 rows of 28 numbers 0-255]}'


class BadRequest(Exception):
    """A request the server refuses, with its HTTP status and a one-line reason."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def digit_from_request(body: bytes) -> np.ndarray:
    """The 28×28 uint8 digit the networks will see, from a /predict body (see :data:`USAGE`)."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not JSON; {USAGE}") from None
    if not isinstance(payload, dict) or ("image" in payload) == ("pixels" in payload):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"expected exactly one of 'image' and 'pixels'; {USAGE}")
    if "image" in payload:
        return digit_from_data_url(payload["image"])
    return digit_from_pixels(payload["pixels"])


def digit_from_data_url(url: Any) -> np.ndarray:
    """A data URL of any image (any size, either polarity, transparent background allowed), prepared like MNIST."""
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'image' must be a data URL: data:image/png;base64,...")
    try:
        encoded = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'image' is not valid base64") from None
    try:
        return mnist_style(decode_grayscale(io.BytesIO(encoded), source="the image"), source="the image")
    except ImageError as error:
        raise BadRequest(HTTPStatus.BAD_REQUEST, str(error)) from None


def digit_from_pixels(rows: Any) -> np.ndarray:
    """28 rows of 28 numbers 0–255, already MNIST-style (white digit on black): used as they are."""
    shape_ok = isinstance(rows, list) and len(rows) == FIELD
    shape_ok = shape_ok and all(isinstance(row, list) and len(row) == FIELD for row in rows)
    if not shape_ok:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"'pixels' must be {FIELD} rows of {FIELD} numbers")
    values = [value for row in rows for value in row]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'pixels' must hold finite numbers only (no NaN, text or null)")
    if not all(0 <= v <= 255 for v in values):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "'pixels' must be between 0 and 255")
    return np.rint(np.array(values, dtype=np.float64)).astype(np.uint8).reshape(FIELD, FIELD)


class Handler(BaseHTTPRequestHandler):
    """GET the page and its links, POST /predict; any other method is 405."""

    server: DemoServer
    server_version = "mnistlab"
    error_content_type = "application/json"
    error_message_format = '{"error": "%(message)s"}'

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path in PAGES:
                name, kind = PAGES[path]
                self.send(HTTPStatus.OK, (WEB_DIR / name).read_bytes(), kind)
            elif path in RESULTS and (self.server.results_dir / RESULTS[path][0]).is_file():
                name, kind = RESULTS[path]
                self.send(HTTPStatus.OK, (self.server.results_dir / name).read_bytes(), kind)
            elif path == "/status":  # the links, and each network's progress and first-layer weights
                links = {url: (self.server.results_dir / name).is_file() for url, (name, _) in RESULTS.items()}
                self.send_json(HTTPStatus.OK, {"links": links, "networks": self.server.watcher.look()})
            else:
                self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path[:100]}"})
        except (FileNotFoundError, PermissionError) as error:  # a results file removed while it was read
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{path[:100]}: could not be read ({error})"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/predict":
            self.send_json(HTTPStatus.NOT_FOUND, {"error": "POST goes to /predict"})
            return
        try:
            digit = digit_from_request(self.read_body())
            self.server.watcher.look(unless_within=0.5)  # the newest epoch's networks answer
            answer = self.server.explainer.explain(digit)
        except LookupError:
            self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": NO_NETWORK})
        except BadRequest as error:
            self.send_json(error.status, {"error": str(error)})
        except Exception as error:  # one bad request never takes the server down
            print(f"serve.py: /predict failed: {type(error).__name__}: {error}", file=sys.stderr)
            self.send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error ({type(error).__name__})"})
        else:
            self.send_json(HTTPStatus.OK, answer)

    def __getattr__(self, name: str):
        """Every method but GET and POST (PUT, DELETE, HEAD, anything) is answered 405, not 501."""
        if name.startswith("do_"):
            return self.method_not_allowed
        raise AttributeError(name)

    def method_not_allowed(self) -> None:
        self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not allowed; use GET or POST"})

    def read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > MAX_BODY:
            self.drain(int(length))
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY // 1024**2} MB")
        return self.rfile.read(int(length))

    def drain(self, length: int) -> None:
        """Read a refused body (up to a limit), so that the client is not cut off before it reads our answer."""
        self.close_connection = True
        remaining = min(length, DRAIN_LIMIT)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return
            remaining -= len(chunk)

    def send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        except ValueError:  # a NaN (a network that diverged): JSON has none, the page would fail to read it
            text = json.dumps(finite(payload), separators=(",", ":"), allow_nan=False)
        self.send(status, text.encode(), "application/json")

    def send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, POST")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # "format": the name http.server gives it
        """Quiet: a learner's terminal shows the URL and errors, not a line per request."""


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON's null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for open connections

    def __init__(self, address: tuple[str, int], models_dir: Path, results_dir: Path) -> None:
        self.explainer, self.results_dir = Explainer(), results_dir
        self.watcher = Watcher(models_dir, results_dir, self.explainer)
        try:
            super().__init__(address, Handler)
        except OSError as error:
            raise UserError(
                f"cannot listen on {address[0]}:{address[1]} ({error.strerror or error}); "
                "choose another with --port (or --host)"
            ) from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def latency_report(url: str, png: bytes, *, single: int = 200, total: int = 1000, clients: int = 8) -> str:
    """Time POST /predict with a canvas-like PNG: ``single`` requests one after another, then ``total`` from
    ``clients`` threads at once. Returns the report's lines (p50 / p95 / p99 / max, and errors)."""
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()

    def one() -> float:
        request = urllib.request.Request(f"{url}predict", data=body, headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        return (time.perf_counter() - started) * 1000

    for _ in range(20):  # warm-up: caches, allocator, the first traced shapes
        one()
    lines = [f"POST /predict, both models, a {len(png):,}-byte canvas PNG ({len(body):,}-byte JSON body), "
             f"{os.cpu_count()} CPU cores:"]
    runs = {"1 client": ([one() for _ in range(single)], 0)}
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one) for _ in range(total)]
        times = [future.result() for future in futures if future.exception() is None]
        runs[f"{clients} clients at once"] = (times, total - len(times))
    for name, (times, errors) in runs.items():
        p50, p95, p99 = np.percentile(times, [50, 95, 99]) if times else (math.nan,) * 3
        lines.append(
            f"  {name:<18} {len(times) + errors:>5} requests: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"p99 {p99:.1f} ms, max {max(times, default=math.nan):.1f} ms; {errors} errors"
        )
    return "\n".join(lines)
