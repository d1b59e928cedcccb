"""Compare the saved CNN and dense network side by side, on the same 10,000 test images.

Loads both models (in Keras' safe mode) and their training records, tests and times them on this
computer, with any Keras backend, prints a table and writes results/comparison.png and .json.
Read top to bottom: flags → the saved models → data → test and time → table and plots.

    python train_cnn.py && python train_dense.py && python compare.py
    KERAS_BACKEND=jax python compare.py --data data/mnist.npz   # offline: python get_mnist.py
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import timeit


def stop(signum, frame):  # Ctrl-C, SIGTERM or SIGHUP: one line, never a traceback
    if "main" in globals():  # Keras has loaded: main() stops, cleaning up, and the end says so
        raise KeyboardInterrupt(signum)
    print(f"\nstopped ({signal.Signals(signum).name}) while loading Keras: nothing was written",
          file=sys.stderr)
    os._exit(128 + signum)


if __name__ == "__main__":
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum and signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's choice stays
            signal.signal(signum, stop)

import keras
import numpy as np
from matplotlib.figure import Figure

MODELS = {"cnn": "python train_cnn.py", "dense": "python train_dense.py"}  # and what makes each
COLORS, LABELS = {"cnn": "#1f77b4", "dense": "#ff7f0e"}, {"cnn": "CNN", "dense": "Dense"}
TABLE = [("test accuracy", "test_accuracy", "{:.2%}"),  # each row's label, number and format
         ("errors / 10,000 test images", "test_errors", "{:,}"),
         ("parameters", "parameters", "{:,}"), ("model file size", "model_file_kib", "{:,.0f} KiB"),
         ("training time", "training_seconds", "{:.1f} s"),
         ("time per epoch", "seconds_per_epoch", "{:.2f} s"),
         ("inference throughput", "images_per_second", "{:,.0f} images/s"),
         ("one-image latency", "latency_ms", "{:.2f} ms")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = parser.add_argument
    flag("--data", metavar="PATH", help="MNIST as a .npz (python get_mnist.py); default: download")
    flag("--models-dir", default="models", metavar="DIR", help="where the trained models are")
    flag("--results-dir", default="results", metavar="DIR", help="their records; the comparison")
    return parser.parse_args(argv)


# The saved models and their records: a missing or broken one names the command that makes it.
def load_model(path: str, made_by: str) -> keras.Model:
    """A .keras file that takes 28×28 images, in safe mode: it refuses one holding Python code."""
    if not os.path.isfile(path):
        fail(f"{path} not found; run `{made_by}` first")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # not a zip, cut off, not a Keras model, holding code
        if "safe_mode=False" in str(error):  # Keras' own words when a file holds Python code
            fail(f"{path} holds Python code (a Lambda layer), which safe mode does not run; "
                 f"run `{made_by}` again, or load it yourself only if you trust where it came from")
        fail(f"{path} is not a readable Keras model ({error!r:.160}); run `{made_by}` again")
    shape = tuple(model.input_shape[1:])
    if shape not in ((28, 28, 1), (28, 28)):
        fail(f"{path} takes inputs of shape {shape}, not 28×28 images; run `{made_by}` again")
    return model


def read_record(path: str, made_by: str, *keys: str) -> dict:
    """The ``keys`` of a JSON record that a training script wrote."""
    try:
        with open(path) as file:
            record = json.load(file)
        return {key: record[key] for key in keys}
    except FileNotFoundError:
        fail(f"{path} not found; run `{made_by}` first")
    except (OSError, ValueError, LookupError, TypeError) as error:  # cut off, not JSON, a key gone
        fail(f"{path} is not a whole record ({error!r:.160}); run `{made_by}` again")


# Data: 28×28 grey images of handwritten digits, pixels 0-255, labels 0-9, checked on loading.
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
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


# Test and time: Keras' predict_on_batch answers a batch in one call, without the set-up that
# predict() does on every call (which would dominate one image's time).
def predict_all(model: keras.Model, images: np.ndarray, batch: int = 4096) -> np.ndarray:
    return np.concatenate([model.predict_on_batch(images[start : start + batch])
                           for start in range(0, len(images), batch)])


def speed(model: keras.Model, images: np.ndarray) -> tuple:
    """Images per second (best of 3 passes) and one image's ms (median of 200), after a warm-up."""
    passes = timeit.repeat(lambda: predict_all(model, images), number=1, repeat=4)[1:]
    answers = timeit.repeat(lambda: model.predict_on_batch(images[:1]), number=1, repeat=201)[1:]
    return len(images) / min(passes), statistics.median(answers) * 1000


def main(argv=None) -> int:
    args = parse_args(argv)

    # The saved models, and the records their training scripts wrote.
    models, records, histories, results = {}, {}, {}, args.results_dir
    for name, made_by in MODELS.items():
        records[name] = read_record(f"{results}/{name}_run.json", made_by, "test_accuracy",
                                    "training_seconds", "epochs", "precision")
        histories[name] = read_record(f"{results}/{name}_history.json", made_by, "epochs")["epochs"]
        models[name] = load_model(f"{args.models_dir}/{name}.keras", made_by)

    # Data: the 10,000 test images, shaped (N, 28, 28, 1) as the models take them.
    _, (x_test, y_test) = load_data(args.data)
    images = x_test[..., None].astype("float32")

    # Test and time both, here; beside them what their records say.
    rows = {}
    for name, model in models.items():
        errors = int((predict_all(model, images).argmax(axis=1) != y_test).sum())
        per_second, latency = speed(model, images)
        record = records[name]
        rows[name] = {**record, "recorded_test_accuracy": record["test_accuracy"],
                      "test_accuracy": 1 - errors / len(y_test), "test_errors": errors,
                      "test_images": len(y_test), "parameters": model.count_params(),
                      "model_file_kib": os.path.getsize(f"{args.models_dir}/{name}.keras") / 1024,
                      "seconds_per_epoch": record["training_seconds"] / record["epochs"],
                      "images_per_second": per_second, "latency_ms": latency}
        print(f"{name}: evaluated and timed", flush=True)

    # The table, a sentence, and the figure and the numbers in files.
    where = f"{os.cpu_count()} cores, Keras {keras.__version__} ({keras.backend.backend()})"
    print(f"\ntimed on {where}\n\n{table(rows)}\n")
    report = {"data": args.data or "keras.datasets.mnist", "machine": where, "models": rows}
    save(results, {"comparison.json": report, "comparison.png": figure(rows, histories)})
    print(f"wrote {results}/comparison.png and {results}/comparison.json")
    return 0


def table(rows: dict) -> str:
    """The table, then a sentence on what it shows."""
    text = [f"{'':<30}" + "".join(f"{name.upper():>20}" for name in rows)]
    for label, key, number in TABLE:
        text.append(f"{label:<30}" + "".join(f"{number.format(row[key]):>20}"
                                             for row in rows.values()))
    cnn, dense = rows["cnn"]["test_errors"], rows["dense"]["test_errors"]
    ratio = rows["dense"]["parameters"] / rows["cnn"]["parameters"]
    size = f"{ratio:.0f}× fewer" if ratio >= 2 else f"{1 / ratio:.1f}× the"
    if cnn <= dense:
        sentence = (f"The CNN makes {dense - cnn:,} fewer errors than the dense network ({cnn} vs "
                    f"{dense}) with {size} parameters.")
    else:
        sentence = (f"The dense network makes fewer errors here ({dense} vs {cnn}): the CNN is "
                    "under-trained; train it with the default flags.")
    return "\n".join([*text, "", sentence])


def figure(rows: dict, histories: dict) -> Figure:
    """Four rows of the table as bars; the learning curves per epoch and against seconds of
    training (of training accuracy if a run held out no validation images: --val-split 0)."""
    fig = Figure(figsize=(15, 8.5), layout="tight")  # drawn into a file: no window, no display
    axes, names = fig.subplots(2, 3).ravel(), list(rows)
    for axis, (label, key, number) in zip(axes, [TABLE[i] for i in (0, 4, 2, 6)], strict=False):
        drawn = axis.bar([LABELS[name] for name in names], [rows[name][key] for name in names],
                         color=[COLORS[name] for name in names])
        axis.bar_label(drawn, [number.format(rows[name][key]) for name in names])
        axis.set_title(label.capitalize())
    axes[0].set_ylim(max(0, min(row["test_accuracy"] for row in rows.values()) - 0.01), 1)
    axes[2].set_yscale("log")
    validated = all("val_accuracy" in row for epochs in histories.values() for row in epochs)
    key, what = ("val_accuracy", "Validation accuracy") if validated else ("accuracy", "Accuracy")
    for name in names:
        curve, style = [row[key] * 100 for row in histories[name]], {"color": COLORS[name]}
        style["label"] = LABELS[name] + ("" if validated else " (training accuracy)")
        axes[4].plot(range(1, len(curve) + 1), curve, "o-", **style)
        seconds = np.cumsum([row["epoch_seconds"] for row in histories[name]])
        axes[5].plot(seconds, curve, "o-", **style)
    axes[4].set(title=f"{what} per epoch", xlabel="epoch", ylabel="%")
    axes[5].set(title=f"{what} against training time", xlabel="seconds of training", ylabel="%")
    axes[4].legend()
    return fig


def save(folder: str, files: dict) -> None:
    """Each file written into a temporary folder beside the old ones, then moved over them only
    when all are whole: a stop or a full disk leaves the previous comparison as it was."""
    try:
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=folder) as temp:
            for name, content in files.items():
                if isinstance(content, Figure):
                    content.savefig(f"{temp}/{name}", dpi=110, bbox_inches="tight")
                else:
                    with open(f"{temp}/{name}", "w") as file:
                        file.write(json.dumps(content, indent=2) + "\n")
            for name in files:
                replace(f"{temp}/{name}", f"{folder}/{name}")
    except OSError as error:
        fail(f"cannot write to {folder}: {error.strerror or error}; free some space or choose "
             "another --results-dir")


def replace(temp: str, path: str) -> None:
    """os.replace, waiting up to 10 s while another program holds ``path`` open on Windows."""
    for _ in range(100):
        try:
            return os.replace(temp, path)
        except PermissionError:
            time.sleep(0.1)
    os.replace(temp, path)


def fail(message: str):
    """A problem the user can fix: one line on stderr, exit code 1."""
    raise SystemExit(f"error: {message}")


# What a stop looks like on the terminal: one line and an exit code, never a traceback.
if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stopped:  # from stop(), at the top
        signum = stopped.args[0] if stopped.args else signal.SIGINT
        print(f"\nstopped ({signal.Signals(signum).name}): nothing was half-written; run the "
              "same command again", file=sys.stderr)
        sys.exit(128 + signum)
