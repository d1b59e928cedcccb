"""Compare the saved CNN and dense network side by side, on the same 10,000 test images.

Loads models/cnn.keras and models/dense.keras (in Keras' safe mode) with the records their training scripts wrote,
tests both again on the test set, times them on this computer, then prints a table and writes
results/comparison.png and results/comparison.json. The code that keeps a run safe sits at the bottom.

    python train_cnn.py && python train_dense.py && python compare.py
    python compare.py --data data/mnist.npz     # offline: the .npz that python get_mnist.py makes
"""

import argparse
import gzip
import json
import math
import os
import signal
import statistics
import sys
import time

if __name__ == "__main__":  # a stop while TensorFlow loads is one line too (the rest of the run: see the bottom)
    for stop in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):  # Windows has no SIGHUP
        if stop and signal.getsignal(stop) is not signal.SIG_IGN:  # what nohup or `&` ignore stays ignored
            signal.signal(stop, lambda signum, frame: os._exit(print(
                f"\n{'interrupted' if signum == signal.SIGINT else f'stopped ({signal.Signals(signum).name})'} while "
                "starting: nothing was written; run the same command again", file=sys.stderr) or 128 + signum))

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

MODELS = {"cnn": "python train_cnn.py", "dense": "python train_dense.py"}  # and the command that makes each
COLORS = {"cnn": "#1f77b4", "dense": "#ff7f0e"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models-dir", default="models", metavar="DIR", help="where the saved models are")
    parser.add_argument("--results-dir", default="results", metavar="DIR", help="their records; the comparison too")
    parser.add_argument("--data", metavar="PATH", help="a Keras-style .npz, or a folder of the four MNIST IDX files "
                        "(plain or .gz); none: keras.datasets.mnist, which downloads MNIST once")
    return parser.parse_args(argv)


# 1. The test images: the same loader, with the same checks, as the training scripts'.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_data(path=None):
    """(x_train, y_train), (x_test, y_test) as uint8 arrays: images (N, 28, 28), labels (N,)."""
    try:
        if path is None:  # Keras downloads MNIST once, then reads its own copy
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        elif os.path.isdir(path):  # the four files of the MNIST distribution
            x_train, y_train, x_test, y_test = (read_idx(path, name) for name in IDX_FILES)
        else:  # never unpickle: a data file cannot run code
            with np.load(path, allow_pickle=False) as archive:
                x_train, y_train, x_test, y_test = (archive[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    except FileNotFoundError as error:
        fail(f"{error.filename}: no such file or directory; give --data a .npz file or a folder of the IDX files")
    except Exception as error:  # offline; or not a .npz, empty, cut off, missing an array, holding Python objects
        fail(f"could not download MNIST ({error}); offline, run `python get_mnist.py` and add --data data/mnist.npz"
             if path is None else f"{path}: not a Keras-style .npz of x_train, y_train, x_test, y_test ({error})")
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
            fail(f"{path}: x_{split} has shape {images.shape} and dtype {images.dtype}; expected (N, 28, 28) uint8")
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            fail(f"{path}: {len(images)} {split} images but {labels.size} {split} labels (shape {labels.shape}, dtype "
                 f"{labels.dtype}); expected one whole number 0-9 per image")
        if labels.min() < 0 or labels.max() > 9:
            fail(f"{path}: y_{split} has labels from {labels.min()} to {labels.max()}, expected 0-9")
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


def read_idx(folder: str, name: str) -> np.ndarray:
    """One IDX file (plain or .gz): a magic number (0x0803 images, 0x0801 labels), the sizes, then the bytes."""
    path = os.path.join(folder, name if os.path.isfile(os.path.join(folder, name)) else name + ".gz")
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as file:
        raw = file.read()
    dims = 3 if "images" in name else 1
    if raw[:4] != (0x800 + dims).to_bytes(4, "big"):
        fail(f"{path}: wrong magic number {raw[:4].hex() or 'none'}, expected {0x800 + dims:08x}; not an IDX file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != 4 + 4 * dims + math.prod(shape):
        problem = "truncated" if len(raw) < 4 + 4 * dims + math.prod(shape) else "too long"
        fail(f"{path}: {problem}: {len(raw)} bytes for the header's shape {shape}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


# 2. The saved models and their records, each checked: a missing or broken one names the command that makes it.
def load_model(path: str, made_by: str) -> keras.Model:
    """A .keras file in safe mode (it cannot run code), that takes 28×28 MNIST images."""
    if not os.path.isfile(path):
        fail(f"{path} not found; run `{made_by}` first")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # not a zip, cut off, not a Keras model
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        fail(f"{path} is not a readable Keras model ({detail}); run `{made_by}` again")
    if tuple(model.input_shape[1:]) not in ((28, 28, 1), (28, 28)):
        fail(f"{path} takes inputs of shape {tuple(model.input_shape[1:])}, not 28×28 images; run `{made_by}` again")
    return model


def read_record(path: str, made_by: str) -> dict:
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, ValueError) as error:
        fail(f"{path} not found; run `{made_by}` first" if isinstance(error, FileNotFoundError) else
             f"{path} is not a readable JSON record ({error}); run `{made_by}` again")


# 3. Timing: Keras' predict() builds an input pipeline on every call, which is slow for one image; a compiled
#    function over model(x) answers any batch size in one call.
def predictor(model: keras.Model):
    compiled = tf.function(lambda images: model(images, training=False),
                           input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
    return lambda images: compiled(np.asarray(images, np.float32).reshape(-1, 28, 28, 1)).numpy()


def predict_all(predict, images: np.ndarray, batch: int = 4096) -> np.ndarray:
    return np.concatenate([predict(images[start : start + batch]) for start in range(0, len(images), batch)])


def images_per_second(predict, images: np.ndarray) -> float:
    """The best of three passes over all the images, in batches of 4096, after a warm-up."""
    predict(images[:4096])
    passes = []
    for _ in range(3):
        started = time.perf_counter()
        predict_all(predict, images)
        passes.append(time.perf_counter() - started)
    return len(images) / min(passes)


def latency_ms(predict, image: np.ndarray, repeats: int = 200) -> float:
    """The median time to answer for one image, after a warm-up."""
    for _ in range(10):
        predict(image)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict(image)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


# 4. The report: a table in the terminal, and a figure with six panels.
def table(rows: dict) -> str:
    lines = [("test accuracy", "{test_accuracy:.2%}"), ("errors / 10,000 test images", "{test_errors:,}"),
             ("parameters", "{parameters:,}"), ("model file size", "{model_file_kib:,.0f} KiB"),
             ("training time", "{training_seconds:.1f} s"), ("time per epoch", "{seconds_per_epoch:.2f} s"),
             ("inference throughput", "{images_per_second:,.0f} images/s"),
             ("one-image latency", "{latency_ms:.2f} ms")]
    header = f"{'':<30}" + "".join(f"{name.upper():>20}" for name in rows)
    return "\n".join([header] + [f"{label:<30}" + "".join(f"{fmt.format(**row):>20}" for row in rows.values())
                                 for label, fmt in lines])


def figure(rows: dict, histories: dict) -> Figure:
    """Accuracy, training time, parameters and inference speed as bars; the learning curves per epoch and in time."""
    fig = Figure(figsize=(15, 8.5))  # drawn straight into a file: no window, no display needed
    axes = fig.subplots(2, 3)
    names, labels = list(rows), [{"cnn": "CNN", "dense": "Dense"}[name] for name in rows]
    accuracies = [rows[name]["test_accuracy"] * 100 for name in names]
    for axis, key, title, fmt in [(axes[0, 0], "test_accuracy", "Test accuracy (%)", "{:.2f}%"),
                                  (axes[0, 1], "training_seconds", "Training time (s)", "{:.1f} s"),
                                  (axes[0, 2], "parameters", "Parameters (log scale)", "{:,.0f}"),
                                  (axes[1, 0], "images_per_second", "Inference (images/s)", "{:,.0f}")]:
        values = accuracies if key == "test_accuracy" else [rows[name][key] for name in names]
        bars = axis.bar(labels, values, color=[COLORS[name] for name in names])
        axis.bar_label(bars, [fmt.format(value) for value in values], fontsize=9)
        axis.set_title(title)
    axes[0, 0].set_ylim(max(0, min(accuracies) - 1), 100)
    axes[0, 2].set_yscale("log")
    validated = all("val_accuracy" in row for epochs in histories.values() for row in epochs)
    for name, label in zip(names, labels, strict=True):  # --val-split 0 leaves no validation set: training accuracy
        key = "val_accuracy" if validated else "accuracy"
        curve = [row[key] * 100 for row in histories[name]]
        style = {"color": COLORS[name], "marker": "o", "label": label + ("" if validated else " (training accuracy)")}
        axes[1, 1].plot(range(1, len(curve) + 1), curve, **style)
        axes[1, 2].plot(np.cumsum([row["epoch_seconds"] for row in histories[name]]), curve, **style)
    measure = "Validation accuracy" if validated else "Accuracy"
    axes[1, 1].set(title=f"{measure} per epoch", xlabel="epoch", ylabel="%")
    axes[1, 2].set(title=f"{measure} against training time", xlabel="seconds of training", ylabel="%")
    for axis in axes[1, 1:]:
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("CNN vs. dense network on MNIST", fontsize=14)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    args = parse_args(argv)
    records = {name: read_record(os.path.join(args.results_dir, f"{name}_run.json"), command)
               for name, command in MODELS.items()}
    histories = {name: read_record(os.path.join(args.results_dir, f"{name}_history.json"), command)["epochs"]
                 for name, command in MODELS.items()}
    paths = {name: os.path.join(args.models_dir, f"{name}.keras") for name in MODELS}
    models = {name: load_model(paths[name], command) for name, command in MODELS.items()}
    _, (x_test, y_test) = load_data(args.data)

    rows = {}
    for name, model in models.items():  # the same test images for both, and the same timing
        predict = predictor(model)
        errors = int((predict_all(predict, x_test).argmax(axis=1) != y_test).sum())
        record = records[name]
        rows[name] = {"test_accuracy": 1 - errors / len(y_test), "test_errors": errors, "test_images": len(y_test),
                      "parameters": model.count_params(), "training_seconds": record["training_seconds"],
                      "epochs": record["epochs"], "seconds_per_epoch": record["training_seconds"] / record["epochs"],
                      "model_file_kib": os.path.getsize(paths[name]) / 1024,
                      "images_per_second": images_per_second(predict, x_test),
                      "latency_ms": latency_ms(predict, x_test[:1]),
                      "recorded_test_accuracy": record["test_accuracy"], "precision": record.get("precision"),
                      "cpu": record.get("environment", {}).get("cpu")}
        print(f"{name}: evaluated and timed", flush=True)

    print(f"\n{table(rows)}\n")
    cnn, dense = rows["cnn"], rows["dense"]
    if cnn["test_errors"] <= dense["test_errors"]:
        print(f"The CNN makes {dense['test_errors'] - cnn['test_errors']:,} fewer errors than the dense network "
              f"({cnn['test_errors']} vs {dense['test_errors']}) with {dense['parameters'] / cnn['parameters']:.0f}× "
              "fewer parameters.")
    else:
        print(f"The dense network makes fewer errors here ({dense['test_errors']} vs {cnn['test_errors']}): the CNN is "
              "under-trained; train it with the default flags.")
    json_path, png_path = (os.path.join(args.results_dir, f"comparison.{kind}") for kind in ("json", "png"))
    write_atomically(json_path, json.dumps({"data": args.data or "keras.datasets.mnist", "models": rows}, indent=2))
    write_atomically(png_path, figure(rows, histories))
    print(f"wrote {png_path} and {json_path}")
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Safety: every way a run can end is one line and an exit code; no file is ever half-written.
# ---------------------------------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's line breaks and shows every flag's default."""


def fail(message: str):
    raise SystemExit(f"error: {message}")  # one line on stderr and exit code 1; `finally` blocks still clean up


def write_atomically(path: str, content) -> None:
    """Text or a figure into a temp file beside ``path``, then renamed over it: a crash leaves the old or the new."""
    temp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        if isinstance(content, str):
            with open(temp, "w") as file:
                file.write(content + "\n")
        else:
            content.savefig(temp, dpi=110, bbox_inches="tight")
        os.replace(temp, path)
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}; free some space or choose another --results-dir")
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def on_signal(signum, frame):
    raise KeyboardInterrupt(signum)


def run(main) -> int:
    """Ctrl-C (130), SIGTERM (143) and SIGHUP (129) end the run with one line; temp files are removed on the way."""
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s
               and signal.getsignal(s) is not signal.SIG_IGN]  # what nohup or `&` ignore stays ignored
    for signum in signals:
        signal.signal(signum, on_signal)
    try:
        code = main()
    except KeyboardInterrupt as stop:
        code = 128 + (stop.args[0] if stop.args else signal.SIGINT)
        what = "interrupted" if code == 130 else f"stopped ({signal.Signals(code - 128).name})"
        print(f"\n{what}: nothing was half-written; run the same command again", file=sys.stderr)
    for signum in signals:  # TensorFlow takes a moment to shut down: a stop now changes nothing
        signal.signal(signum, lambda signum, frame: os._exit(code))
    return code


if __name__ == "__main__":
    sys.exit(run(main))
