"""Compare the saved CNN and dense network side by side, on the same 10,000 test images.

Loads models/cnn.keras and models/dense.keras (in Keras' safe mode) with the records their training
scripts wrote, tests both again on the test set, times them on this computer, then prints a table
and writes results/comparison.png and results/comparison.json. Read top to bottom: flags → the
saved models → data → test and time → the report. The code that keeps a run safe sits at the end.

    python train_cnn.py && python train_dense.py && python compare.py
    python compare.py --data data/mnist.npz     # offline: the .npz that python get_mnist.py makes
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time

if __name__ == "__main__":  # Safety, skip it: Ctrl-C while TensorFlow loads is one line too
    def stopped_while_starting(signum, frame):
        name = signal.Signals(signum).name
        what = "interrupted" if signum == signal.SIGINT else f"stopped ({name})"
        print(f"\n{what} while starting: nothing was written; run the same command again",
              file=sys.stderr)
        os._exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum and signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's choice stays
            signal.signal(signum, stopped_while_starting)

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure


def fail(message: str):
    """A problem the user can fix: one line on stderr, exit code 1 (`finally` blocks still run)."""
    raise SystemExit(f"error: {message}")


MODELS = {"cnn": "python train_cnn.py", "dense": "python train_dense.py"}  # and what makes each
COLORS = {"cnn": "#1f77b4", "dense": "#ff7f0e"}


# Flags.
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    flag = parser.add_argument
    flag("--models-dir", default="models", metavar="DIR", help="where the saved models are")
    flag("--results-dir", default="results", metavar="DIR", help="their records; the comparison")
    flag("--data", metavar="PATH",
         help="a Keras-style .npz (python get_mnist.py makes one); none: keras.datasets.mnist")
    return parser.parse_args(argv)


# Data: the test images, through a copy of the training scripts' loader, with the same checks.
def load_data(path=None):
    """(x_train, y_train), (x_test, y_test) as uint8 arrays: images (N, 28, 28), labels (N,)."""
    if path and os.path.isdir(path):
        fail(f"{path}: a folder, not a .npz file; for the four MNIST IDX files in it, run "
             f"`python get_mnist.py --from-idx {path}`, then add --data data/mnist.npz")
    try:
        if path is None:  # Keras downloads MNIST once, then reads its own copy
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        else:  # never unpickle: a data file cannot run code
            with np.load(path, allow_pickle=False) as archive:
                x_train, y_train = archive["x_train"], archive["y_train"]
                x_test, y_test = archive["x_test"], archive["y_test"]
    except FileNotFoundError as error:
        fail(f"{error.filename}: no such file or directory; give --data the .npz of get_mnist.py")
    except Exception as error:  # offline; or not a .npz, cut off, missing an array, holding objects
        if path is None:
            fail(f"could not download MNIST ({error}); offline, run `python get_mnist.py` and add "
                 "--data data/mnist.npz")
        fail(f"{path}: not a Keras-style .npz of x_train, y_train, x_test, y_test ({error})")
    check_data(path, x_train, y_train, x_test, y_test)  # shapes, types, labels: see Safety
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


# The saved models and their records, each checked: a missing or broken one names what makes it.
def load_model(path: str, made_by: str) -> keras.Model:
    """A .keras file in safe mode (it refuses a model that holds Python code, such as a Lambda
    layer), that takes 28×28 MNIST images."""
    if not os.path.isfile(path):
        fail(f"{path} not found; run `{made_by}` first")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # not a zip, cut off, not a Keras model, holding code
        if "safe_mode=False" in str(error):  # Keras' own words when a file holds Python code
            fail(f"{path} holds Python code (a Lambda layer), which safe mode does not run; "
                 f"run `{made_by}` again, or load it yourself only if you trust where it came from")
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        fail(f"{path} is not a readable Keras model ({detail}); run `{made_by}` again")
    shape = tuple(model.input_shape[1:])
    if shape not in ((28, 28, 1), (28, 28)):
        fail(f"{path} takes inputs of shape {shape}, not 28×28 images; run `{made_by}` again")
    return model


def read_record(path: str, made_by: str) -> dict:
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        fail(f"{path} not found; run `{made_by}` first")
    except (OSError, ValueError) as error:
        fail(f"{path} is not a readable JSON record ({error}); run `{made_by}` again")


# Timing: Keras' predict() builds an input pipeline on every call, which is slow for one image; a
# compiled function over model(x) answers any batch size in one call.
def predictor(model: keras.Model):
    signature = [tf.TensorSpec((None, 28, 28, 1), tf.float32)]
    compiled = tf.function(lambda images: model(images, training=False), input_signature=signature)
    return lambda images: compiled(np.asarray(images, np.float32).reshape(-1, 28, 28, 1)).numpy()


def predict_all(predict, images: np.ndarray, batch: int = 4096) -> np.ndarray:
    return np.concatenate([predict(images[start : start + batch])
                           for start in range(0, len(images), batch)])


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


# The report: a table in the terminal, and a figure with six panels.
def table(rows: dict) -> str:
    lines = [("test accuracy", "{test_accuracy:.2%}"),
             ("errors / 10,000 test images", "{test_errors:,}"), ("parameters", "{parameters:,}"),
             ("model file size", "{model_file_kib:,.0f} KiB"),
             ("training time", "{training_seconds:.1f} s"),
             ("time per epoch", "{seconds_per_epoch:.2f} s"),
             ("inference throughput", "{images_per_second:,.0f} images/s"),
             ("one-image latency", "{latency_ms:.2f} ms")]
    text = [f"{'':<30}" + "".join(f"{name.upper():>20}" for name in rows)]
    for label, fmt in lines:
        text.append(f"{label:<30}" + "".join(f"{fmt.format(**row):>20}" for row in rows.values()))
    return "\n".join(text)


def figure(rows: dict, histories: dict) -> Figure:
    """Accuracy, training time, parameters and inference speed as bars; the learning curves per
    epoch and against seconds of training."""
    fig = Figure(figsize=(15, 8.5))  # drawn straight into a file: no window, no display needed
    axes = fig.subplots(2, 3)
    names, labels = list(rows), [{"cnn": "CNN", "dense": "Dense"}[name] for name in rows]
    colors = [COLORS[name] for name in names]
    bars = [(axes[0, 0], "test_accuracy", "Test accuracy (%)", "{:.2f}%"),
            (axes[0, 1], "training_seconds", "Training time (s)", "{:.1f} s"),
            (axes[0, 2], "parameters", "Parameters (log scale)", "{:,.0f}"),
            (axes[1, 0], "images_per_second", "Inference (images/s)", "{:,.0f}")]
    for axis, key, title, fmt in bars:
        values = [rows[name][key] * (100 if key == "test_accuracy" else 1) for name in names]
        drawn = axis.bar(labels, values, color=colors)
        axis.bar_label(drawn, [fmt.format(value) for value in values], fontsize=9)
        axis.set_title(title)
    axes[0, 0].set_ylim(max(0, min(rows[name]["test_accuracy"] * 100 for name in names) - 1), 100)
    axes[0, 2].set_yscale("log")
    # With --val-split 0 there is no validation set: then the curves are training accuracy.
    validated = all("val_accuracy" in row for epochs in histories.values() for row in epochs)
    key = "val_accuracy" if validated else "accuracy"
    measure = "Validation accuracy" if validated else "Accuracy"
    for name, label in zip(names, labels, strict=True):
        curve = [row[key] * 100 for row in histories[name]]
        seconds = np.cumsum([row["epoch_seconds"] for row in histories[name]])
        suffix = "" if validated else " (training accuracy)"
        style = {"color": COLORS[name], "marker": "o", "label": label + suffix}
        axes[1, 1].plot(range(1, len(curve) + 1), curve, **style)
        axes[1, 2].plot(seconds, curve, **style)
    axes[1, 1].set(title=f"{measure} per epoch", xlabel="epoch", ylabel="%")
    axes[1, 2].set(title=f"{measure} against training time", xlabel="seconds of training",
                   ylabel="%")
    for axis in axes[1, 1:]:
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle("CNN vs. dense network on MNIST", fontsize=14)
    fig.tight_layout()
    return fig


def compare(models: dict, records: dict, paths: dict, x_test, y_test) -> dict:
    """Each model tested on the same images and timed the same way: a row of the table for each."""
    rows = {}
    for name, model in models.items():
        predict = predictor(model)
        errors = int((predict_all(predict, x_test).argmax(axis=1) != y_test).sum())
        record = records[name]
        rows[name] = {"test_accuracy": 1 - errors / len(y_test), "test_errors": errors,
                      "test_images": len(y_test), "parameters": model.count_params(),
                      "training_seconds": record["training_seconds"], "epochs": record["epochs"],
                      "seconds_per_epoch": record["training_seconds"] / record["epochs"],
                      "model_file_kib": os.path.getsize(paths[name]) / 1024,
                      "images_per_second": images_per_second(predict, x_test),
                      "latency_ms": latency_ms(predict, x_test[:1]),
                      "recorded_test_accuracy": record["test_accuracy"],
                      "precision": record.get("precision"),
                      "cpu": record.get("environment", {}).get("cpu")}
        print(f"{name}: evaluated and timed", flush=True)
    return rows


def main(argv=None) -> int:
    # Flags.
    args = parse_args(argv)

    # The saved models and the records their scripts wrote, checked before the data loads.
    records, histories, paths, models = {}, {}, {}, {}
    for name, made_by in MODELS.items():
        records[name] = read_record(os.path.join(args.results_dir, f"{name}_run.json"), made_by)
        history = read_record(os.path.join(args.results_dir, f"{name}_history.json"), made_by)
        histories[name] = history["epochs"]
        paths[name] = os.path.join(args.models_dir, f"{name}.keras")
    for name, made_by in MODELS.items():
        models[name] = load_model(paths[name], made_by)

    # Data: the test images.
    _, (x_test, y_test) = load_data(args.data)

    # Test and time both, on this computer.
    rows = compare(models, records, paths, x_test, y_test)

    # The report: a table, a sentence, a figure and a JSON file.
    print(f"\n{table(rows)}\n")
    cnn, dense = rows["cnn"], rows["dense"]
    if cnn["test_errors"] <= dense["test_errors"]:
        fewer = dense["test_errors"] - cnn["test_errors"]
        ratio = dense["parameters"] / cnn["parameters"]
        size = f"{ratio:.0f}× fewer" if ratio >= 2 else f"{1 / ratio:.1f}× the"
        print(f"The CNN makes {fewer:,} fewer errors than the dense network ({cnn['test_errors']} "
              f"vs {dense['test_errors']}) with {size} parameters.")
    else:
        print(f"The dense network makes fewer errors here ({dense['test_errors']} vs "
              f"{cnn['test_errors']}): the CNN is under-trained; train it with the default flags.")
    json_path = os.path.join(args.results_dir, "comparison.json")
    png_path = os.path.join(args.results_dir, "comparison.png")
    data = args.data or "keras.datasets.mnist"
    write_atomically({json_path: json.dumps({"data": data, "models": rows}, indent=2),
                      png_path: figure(rows, histories)})
    print(f"wrote {png_path} and {json_path}")
    return 0


# ------------------------------------------------------------------------------------------------
# Safety: every way a run can end is one line and an exit code; no file is ever half-written, on
# Windows too. A learner can skip it.
# ------------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's line breaks and shows every flag's default."""


def check_data(path, x_train, y_train, x_test, y_test) -> None:
    """Images (N, 28, 28) of uint8 and one label 0-9 for each, or one line saying what is wrong."""
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or len(images) == 0:
            fail(f"{path}: x_{split} has shape {images.shape} and dtype {images.dtype}; "
                 "expected (N, 28, 28) uint8")
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            fail(f"{path}: {len(images)} {split} images but {labels.size} {split} labels (shape "
                 f"{labels.shape}, dtype {labels.dtype}); expected one whole number 0-9 per image")
        if labels.min() < 0 or labels.max() > 9:
            fail(f"{path}: y_{split} has labels from {labels.min()} to {labels.max()}, "
                 "expected 0-9")


def write_atomically(files: dict) -> None:
    """Each of ``files`` (path: text or a figure) into a temp file beside it; only when all are
    whole are they renamed over the old ones: a failure leaves the old files, never half of one."""
    prefix = f".tmp-{os.getpid()}-"
    temps = {path: os.path.join(os.path.dirname(path), prefix + os.path.basename(path))
             for path in files}
    path = next(iter(files))
    try:
        for path, content in files.items():
            if isinstance(content, str):
                with open(temps[path], "w") as file:
                    file.write(content + "\n")
            else:
                content.savefig(temps[path], dpi=110, bbox_inches="tight")
        for path, temp in temps.items():
            replace(temp, path)
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}; free some space or choose another "
             "--results-dir")
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)


def replace(temp: str, path: str, seconds: float = 10) -> None:
    """os.replace, waiting while a reader (serve.py, compare.py) has ``path`` open on Windows,
    which refuses with WinError 32 ("used by another process") until it closes it."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return os.replace(temp, path)
        except OSError as error:
            if getattr(error, "winerror", None) != 32 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def on_signal(signum, frame):
    raise KeyboardInterrupt(signum)


def run(main) -> int:
    """Ctrl-C (130), SIGTERM (143) and SIGHUP (129) end the run with one line; temp files go."""
    signals = [signum for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
               if signum and signal.getsignal(signum) is not signal.SIG_IGN]  # nohup's stays
    for signum in signals:
        signal.signal(signum, on_signal)
    try:
        code = main()
    except KeyboardInterrupt as stop:
        code = 128 + (stop.args[0] if stop.args else signal.SIGINT)
        name = signal.Signals(code - 128).name
        what = "interrupted" if code == 130 else f"stopped ({name})"
        print(f"\n{what}: nothing was half-written; run the same command again", file=sys.stderr)
    for signum in signals:  # TensorFlow takes a moment to shut down: a stop now changes nothing
        signal.signal(signum, lambda signum, frame: os._exit(code))
    return code


if __name__ == "__main__":
    sys.exit(run(main))
