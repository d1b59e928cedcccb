"""A live page: watch the CNN and the dense network learn, draw a digit, and see what each has learned.

Serves one page on this computer only (127.0.0.1 unless --host says otherwise), with no internet needed. It starts
before any network exists and follows train_cnn.py and train_dense.py while they train (from any terminal), after
every epoch, without a reload; when nothing trains, it shows the last finished runs:

  - one line per network: not started / epoch k of n / finished (test accuracy) / stopped;
  - both networks' accuracy and loss, training and validation, per epoch and against seconds of training;
  - the CNN's first-layer kernels beside the dense network's first-layer weights: strokes against templates;
  - a canvas to draw on (mouse or touch), answered by each network as of its latest epoch, as you draw;
  - the 28×28 image the networks actually receive after MNIST-style preprocessing (crop, scale, centre of mass);
  - the CNN's feature maps for your drawing, and which pixels each network's answer depends on (saliency);
  - a shift control: move the prepared digit 0–6 pixels without recentring it, and watch both answers.

    python serve.py                 # then python train_cnn.py and python train_dense.py (make live does all three)
    python serve.py --port 8080
    python serve.py --bench         # measure /predict latency with the finished models: 1 client, then 8 at once

The server only reads what the scripts write anyway (mnistlab/live.py says which files); no request writes a file.
API: POST /predict with {"image": "data:image/png;base64,..."} or {"pixels": [28 rows of 28 numbers 0–255]}.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

from mnistlab import cli


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    cli.add_server_flags(parser)
    parser.add_argument(
        "--models-dir",
        metavar="DIR",
        default=cli.DEFAULT_MODELS_DIR,
        help="the saved models, and the training runs to follow (default: %(default)s)",
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        default=cli.DEFAULT_RESULTS_DIR,
        help="where report.html and comparison.png are linked from (default: %(default)s)",
    )
    cli.add_data_flag(parser)  # --bench only: a test digit to draw
    parser.add_argument(
        "--bench",
        action="store_true",
        help="measure /predict latency (200 requests from 1 client, 1,000 from 8 at once) and exit",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from pathlib import Path

    from mnistlab import data, images, inference, server

    if args.bench:  # both finished models, each checked; a missing one names the command that makes it
        inference.load_saved_models(args.models_dir)
        example = data.load(args.data).x_test[0]
    address = (args.host, 0 if args.bench else args.port)
    httpd = server.DemoServer(address, Path(args.models_dir), Path(args.results_dir))
    if args.bench:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        print(server.latency_report(httpd.url, images.canvas_png(example)))
        httpd.shutdown()
        return 0
    try:
        print(f"serving the CNN and the dense network on {httpd.url} (Ctrl-C to stop)", flush=True)
        print(f"it follows train_cnn.py and train_dense.py as they train into {args.models_dir}/: run them in another "
              "terminal (make live does both)", flush=True)
        httpd.serve_forever()
    except KeyboardInterrupt as stop:  # Ctrl-C is how a server is meant to end; SIGTERM keeps its exit code
        print("serve.py stopped", file=sys.stderr)
        signum = getattr(stop, "signum", signal.SIGINT)
        return 0 if signum == signal.SIGINT else 128 + signum
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
