"""The benchmark's baseline: the classic Keras "Simple MNIST convnet" recipe, trained exactly as published.

Conv2D(32, 3×3, ReLU) → MaxPool 2 → Conv2D(64, 3×3, ReLU) → MaxPool 2 → Flatten → Dropout 0.5 → Dense(10);
Adam defaults, batch 128, ``validation_split=0.1``, 15 epochs, NumPy arrays into ``fit``, float32.

Run by benchmark.py in its own process: ``python -m mnistlab.baseline --seed 1 --out run.json``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import keras
from keras import layers

from mnistlab import cli
from mnistlab.data import INPUT_SHAPE

EPOCHS = 15
BATCH_SIZE = 128
VALIDATION_SPLIT = 0.1


def build_classic_cnn() -> keras.Model:
    """The classic Keras "Simple MNIST convnet", layer for layer (its rescaling inside, like every model here)."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name="pixels"),
            layers.Rescaling(1.0 / 255, name="rescale"),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ],
        name="classic_cnn",
    )


def parse_args(argv: Sequence[str] | None = None):
    parser = cli.new_parser(__doc__)
    parser.add_argument("--data", metavar="PATH", default=None, help="a Keras-style .npz (default: as the scripts)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=1, help="random seed (default: %(default)s)")
    parser.add_argument("--epochs", type=cli.positive_int, default=EPOCHS, help="epochs (default: %(default)s)")
    parser.add_argument("--train-size", type=cli.positive_int, default=None, help="first N training images")
    parser.add_argument("--out", required=True, help="where to write the run record (JSON)")
    parser.add_argument("--model-out", default=None, help="also save the trained model here (.keras)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from mnistlab import callbacks, data, records

    dataset = data.load(args.data).first(args.train_size)
    keras.utils.set_random_seed(args.seed)
    x_train, x_test = dataset.x_train[..., None].astype("float32"), dataset.x_test[..., None].astype("float32")
    model = build_classic_cnn()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    tracker = callbacks.TestAccuracyTracker(x_test, dataset.y_test)
    started = time.perf_counter()
    model.fit(
        x_train,
        dataset.y_train,
        batch_size=BATCH_SIZE,
        epochs=args.epochs,
        validation_split=VALIDATION_SPLIT,
        callbacks=[callbacks.EpochTimer(), tracker],
        verbose=2,
    )
    fit_seconds = time.perf_counter() - started
    test_loss, test_accuracy = model.evaluate(x_test, dataset.y_test, verbose=0)
    record = {
        "name": "classic",
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "parameters": int(model.count_params()),
        "training_seconds": fit_seconds - tracker.seconds,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "train_images": round(len(x_train) * (1 - VALIDATION_SPLIT)),
        "seed": args.seed,
        "precision": "float32",
        "epoch_test_accuracy": tracker.accuracies,
        "epoch_seconds": tracker.epoch_seconds,
        "test_eval_seconds": tracker.seconds,
        "peak_memory_mib": records.peak_memory_mib(),
    }
    if args.model_out:
        records.save_model(model, args.model_out)
    records.write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
