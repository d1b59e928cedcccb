"""Compare the saved CNN and dense network side by side, on the same 10,000 test images.

Loads models/cnn.keras and models/dense.keras (Keras safe mode) and their run records, re-evaluates both on
the test set, measures inference speed now, then prints a table and writes results/comparison.png and
results/comparison.json.

    python train_cnn.py && python train_dense.py && python compare.py
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnistlab import cli

THROUGHPUT_BATCH = 4096  # large batches amortise per-call overhead: the "many images" case
LATENCY_REPEATS = 200  # single-image calls timed; the median is reported


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    cli.add_io_flags(parser)
    return parser.parse_args(argv)


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table printed in the terminal."""
    lines = [
        ("test accuracy", "{test_accuracy:.2%}"),
        ("errors / 10,000 test images", "{test_errors:,}"),
        ("parameters", "{parameters:,}"),
        ("model file size", "{model_file_kib:,.0f} KiB"),
        ("training time", "{training_seconds:.1f} s"),
        ("time per epoch", "{seconds_per_epoch:.2f} s"),
        ("inference throughput", "{images_per_second:,.0f} images/s"),
        ("one-image latency", "{latency_ms:.2f} ms"),
    ]
    names = list(rows)
    width = 30
    out = [f"{'':<{width}}" + "".join(f"{name.upper():>20}" for name in names)]
    for label, fmt in lines:
        out.append(f"{label:<{width}}" + "".join(f"{fmt.format(**rows[name]):>20}" for name in names))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    from mnistlab import data, inference, plots, records  # after parsing: fast --help

    # 1. Run records and saved models: each missing piece names the command that makes it.
    runs = {
        name: records.read_json(results_dir / f"{name}_run.json", made_by) for name, made_by in cli.SAVED_MODELS.items()
    }
    histories = {
        name: records.read_json(results_dir / f"{name}_history.json", made_by)["epochs"]
        for name, made_by in cli.SAVED_MODELS.items()
    }
    paths = {name: Path(args.models_dir) / f"{name}.keras" for name in cli.SAVED_MODELS}
    models = inference.load_saved_models(args.models_dir)

    # 2. The same test images for both.
    dataset = data.load(args.data)

    # 3. Re-evaluate and time each model now, on this machine.
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        predict = inference.predictor(model)
        probabilities = inference.predict_in_batches(predict, dataset.x_test, THROUGHPUT_BATCH)
        wrong = int((probabilities.argmax(axis=1) != dataset.y_test).sum())
        run = runs[name]
        rows[name] = {
            "test_accuracy": 1 - wrong / len(dataset.y_test),
            "test_errors": wrong,
            "test_images": len(dataset.y_test),
            "parameters": int(model.count_params()),
            "model_file_kib": paths[name].stat().st_size / 1024,
            "training_seconds": run["training_seconds"],
            "epochs": run["epochs"],
            "seconds_per_epoch": run["training_seconds"] / run["epochs"],
            "images_per_second": inference.throughput(predict, dataset.x_test, THROUGHPUT_BATCH),
            "latency_ms": inference.latency_ms(predict, dataset.x_test[0], LATENCY_REPEATS),
            "recorded_test_accuracy": run["test_accuracy"],
            "precision": run.get("precision"),
        }
        print(f"{name}: evaluated and timed", flush=True)

    # 4. Report: terminal table, JSON with every number, one figure.
    print()
    print(table(rows))
    print()
    payload = {"data_source": dataset.source, "models": rows, "environment": records.environment()}
    json_path = records.write_json(results_dir / "comparison.json", payload)
    png_path = plots.save(plots.comparison_figure(rows, histories), results_dir / "comparison.png")
    cnn, dense = rows["cnn"], rows["dense"]
    print(
        f"The CNN makes {dense['test_errors'] - cnn['test_errors']:,} fewer errors than the dense network "
        f"({cnn['test_errors']} vs {dense['test_errors']}) with {dense['parameters'] / cnn['parameters']:.0f}× "
        f"fewer parameters."
        if cnn["test_errors"] <= dense["test_errors"]
        else f"The dense network makes fewer errors here ({dense['test_errors']} vs {cnn['test_errors']}): "
        "the CNN is under-trained; train it with the default flags."
    )
    print(f"wrote {png_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
