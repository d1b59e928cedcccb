"""Look inside the trained models: kernels, feature maps, confusion matrices, and the digits they get wrong.

Writes to the results dir:
  kernels.png          the first conv layer's kernels — each a small learned feature detector
  feature_maps.png     one test digit after every conv and pooling layer: edges first, abstract patterns deeper
  confusion.png        confusion matrices of both models, side by side
  misclassified.png    test digits each model gets wrong, with true label, prediction and confidence
  visualize.json       the numbers behind them

    python visualize.py                  # after train_cnn.py and train_dense.py
    python visualize.py --digit 7        # the feature maps of test image number 7 (a handwritten 9)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mnistlab import cli

MISCLASSIFIED_SHOWN = 24  # per model


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument(
        "--digit",
        type=cli.non_negative_int,
        default=0,
        help="index of the test image whose feature maps are shown (default: %(default)s)",
    )
    cli.add_io_flags(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    import numpy as np

    import compare
    from mnistlab import UserError, data, inference, plots, records

    # 1. The saved models and the test set.
    models = inference.load_saved_models(args.models_dir)
    dataset = data.load(args.data)
    if args.digit >= len(dataset.x_test):
        raise UserError(f"--digit {args.digit} is out of range: the test set has {len(dataset.x_test)} images")

    # 2. Predictions of both models on every test image.
    probabilities = {
        name: compare.predict_all(compare.predictor(model), dataset.x_test) for name, model in models.items()
    }
    predicted = {name: probs.argmax(axis=1) for name, probs in probabilities.items()}

    # 3. Kernels and feature maps of the CNN.
    cnn = models["cnn"]
    plots.save(plots.kernels_figure(cnn), results_dir / "kernels.png")
    maps = plots.feature_maps(cnn, dataset.x_test[args.digit])
    plots.save(plots.feature_maps_figure(dataset.x_test[args.digit], maps), results_dir / "feature_maps.png")

    # 4. Confusion matrices and misclassified digits of both.
    confusion = {name: plots.confusion_matrix(dataset.y_test, pred) for name, pred in predicted.items()}
    plots.save(plots.confusion_figure(confusion), results_dir / "confusion.png")
    plots.save(
        plots.misclassified_figure(dataset.x_test, dataset.y_test, probabilities, MISCLASSIFIED_SHOWN),
        results_dir / "misclassified.png",
    )

    # 5. Numbers, and a two-line conclusion.
    errors = {name: int((pred != dataset.y_test).sum()) for name, pred in predicted.items()}
    worst = {}
    for name, matrix in confusion.items():
        off = np.array(matrix, dtype=float)
        np.fill_diagonal(off, 0)
        true, guess = np.unravel_index(off.argmax(), off.shape)
        worst[name] = {"true": int(true), "predicted": int(guess), "count": int(off.max())}
    records.write_json(
        results_dir / "visualize.json",
        {
            "errors": errors,
            "confusion": confusion,
            "most_common_confusion": worst,
            "feature_map_shapes": {name: list(fmap.shape) for name, fmap in maps},
            "first_kernel_size": list(next(layer.kernel_size for layer in cnn.layers if hasattr(layer, "kernel_size"))),
            "digit_index": args.digit,
            "digit_label": int(dataset.y_test[args.digit]),
        },
    )
    shapes = " → ".join(f"{fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}" for _, fmap in maps)
    print(f"Feature maps shrink and deepen layer by layer ({shapes}): pixels become stroke and shape detectors.")
    print(
        f"Errors on {len(dataset.y_test):,} test digits: CNN {errors['cnn']}, dense {errors['dense']}; most "
        f"common mix-up — CNN {worst['cnn']['true']}→{worst['cnn']['predicted']} ({worst['cnn']['count']}×), "
        f"dense {worst['dense']['true']}→{worst['dense']['predicted']} ({worst['dense']['count']}×)."
    )
    print(f"wrote kernels.png, feature_maps.png, confusion.png, misclassified.png, visualize.json to {results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
