"""Classify your own handwritten digits with both saved models.

Each image (PNG or JPEG, any size, dark-on-light or light-on-dark, colour or grey) is prepared the way MNIST
was made — grayscale, inverted if the background is light, cropped to the digit, fitted into 20×20 keeping
its aspect, centred by centre of mass in 28×28 — and classified by the CNN and the dense network.

    python predict.py my_seven.png photo_of_a_two.jpg
    python predict.py digit.png --json          # machine-readable
    python predict.py digit.png --show          # also saves results/predict_<name>.png
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mnistlab import cli

TOP = 3


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files of single digits")
    parser.add_argument("--json", action="store_true", help="print JSON: per file, each model's top-3 [label, p]")
    parser.add_argument(
        "--show",
        action="store_true",
        help="save a figure of the prepared input and both models' probabilities to the results dir",
    )
    cli.add_models_flag(parser)
    cli.add_results_flag(parser, "where --show saves its figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from mnistlab import images, inference  # after parsing: fast --help

    # 1. Prepare every image first: a bad file is reported before the slow model loading.
    digits = {path: images.load_digit(path) for path in args.images}

    # 2. Both saved models (safe mode); Keras' predict_on_batch answers one image in one call.
    models = inference.load_saved_models(args.models_dir)

    # 3. Top-3 classes per model, per image.
    report = []
    for path, digit in digits.items():
        entry = {"file": path, "models": {}}
        probabilities = {name: model.predict_on_batch(digit[None])[0] for name, model in models.items()}
        for name, probs in probabilities.items():
            best = probs.argsort()[::-1][:TOP]
            entry["models"][name] = [[int(label), round(float(probs[label]), 4)] for label in best]
        report.append(entry)
        if args.show:
            from mnistlab import plots

            target = cli.writable_dir(args.results_dir, "results dir") / f"predict_{Path(path).stem}.png"
            plots.save(plots.prediction_figure(digit, probabilities, Path(path).name), target)
            entry["figure"] = str(target)

    # 4. Print: a readable line per model, or JSON for scripts.
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for entry in report:
            print(entry["file"])
            for name, top in entry["models"].items():
                ranked = ", ".join(f"{label} ({p:.1%})" for label, p in top)
                print(f"  {name:<6} {ranked}")
            if "figure" in entry:
                print(f"  figure: {entry['figure']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
