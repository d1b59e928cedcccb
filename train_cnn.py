"""Train a convolutional neural network (CNN) on MNIST and save it to models/cnn.keras.

A CNN slides small learned kernels over the image: a stroke detector learned in one corner works
everywhere (parameter sharing), and pooling keeps the strongest responses while it shrinks the maps.
Read top to bottom: flags → data → the network → compile → fit → test → save. The block at the end
turns Ctrl-C, a full disk or a bad file into one line instead of a traceback.

    python train_cnn.py                         # the default CNN: 99% test accuracy in 5 epochs
    python train_cnn.py --preset best           # a deeper CNN, 20 epochs of moved digits: ~99.6%
    python train_cnn.py --data data/mnist.npz   # offline: python get_mnist.py writes it
    python train_cnn.py --resume                # after a stop: on from the last finished epoch
"""

import argparse
import csv
import glob
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time


def stopped_while_loading(signum, frame):  # Keras takes seconds to load: a stop then is one line
    print(f"\nstopped ({signal.Signals(signum).name}) while loading Keras", file=sys.stderr)
    os._exit(128 + signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM))  # Windows
if __name__ == "__main__":
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's choice stays
            signal.signal(signum, stopped_while_loading)

import keras
import numpy as np
from keras import layers

# Flags. A preset sets the flags the command line leaves out. Words: a step shows the network one
# batch of images and nudges its weights (by the learning rate, with the Adam rule); an epoch is
# one pass over all the training images.
PRESETS = {
    "fast": dict(epochs=5, batch_size=384, learning_rate=6e-3, augment=False, val_split=0.1,
                 label_smoothing=0.0, average_weights=False, shifted_views=False),
    "best": dict(epochs=20, batch_size=256, learning_rate=3e-3, augment=True, val_split=0.0,
                 label_smoothing=0.1, average_weights=True, shifted_views=True),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flag, on_off = parser.add_argument, argparse.BooleanOptionalAction
    flag("--preset", choices=PRESETS, default="fast", help="defaults and network (best: deeper)")
    flag("--epochs", type=int, help="passes over the training images (fast: 5, best: 20)")
    flag("--batch-size", type=int, help="images per step (fast: 384, best: 256)")
    flag("--learning-rate", type=float, help="peak rate of Adam (fast: 0.006, best: 0.003)")
    flag("--val-split", type=float, help="share held out to validate (fast: 0.1, best: 0)")
    flag("--augment", action=on_off, help="train on randomly moved digits (best: on)")
    flag("--label-smoothing", type=float, help="share of each label spread out (best: 0.1)")
    flag("--average-weights", action=on_off, help="end on the weights' recent average (best: on)")
    flag("--shifted-views", action=on_off, help="answer as five moved views vote (best: on)")
    flag("--seed", type=int, default=1, help="seed of the weights, the shuffling and dropout")
    flag("--train-size", type=int, metavar="N", help="train on the first N training images only")
    flag("--precision", choices=("float32", "mixed_bfloat16"), default="float32",
         help="mixed_bfloat16: faster on CPUs with AMX-BF16 units (recent Xeons) and GPUs")
    flag("--resume", action="store_true", help="go on with a stopped run from its last epoch")
    flag("--tensorboard", metavar="DIR", help="also write TensorBoard logs to DIR")
    flag("--data", metavar="PATH", help="MNIST as a .npz (python get_mnist.py); default: download")
    flag("--models-dir", default="models", metavar="DIR", help="where the trained model goes")
    flag("--results-dir", default="results", metavar="DIR", help="where its records go")
    args = parser.parse_args(argv)
    for name, value in PRESETS[args.preset].items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    for name in ("epochs", "batch_size", "train_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be greater than 0, got {args.learning_rate}")
    for name in ("val_split", "label_smoothing"):
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 0 and less than 1, "
                         f"got {getattr(args, name)}")
    return args


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


# The network: [Conv2D → ReLU → MaxPooling2D] × 2 → Flatten → Dropout → Dense: 35k parameters.
def build_model(augment: bool = False) -> keras.Model:
    # Keras' functional API: Input is a placeholder, each layer is called on the one before, and
    # Model joins the chain. No image flows through until fit().
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")  # raw pixels 0-255, 28×28×1
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # 0-1; the saved model takes raw pixels
    if augment:
        x = augmentation()(x)  # random small rotations, zooms and shifts, only while training
    # 32 kernels of 5×5, each a stroke detector with 25 weights, slid over every position.
    x = layers.Conv2D(32, 5, name="conv1")(x)  # 24 positions across 28 pixels: 24×24×32 maps
    x = layers.ReLU(name="relu1")(x)  # keep the positive responses, zero the rest
    x = layers.MaxPooling2D(2, name="pool1")(x)  # → 12×12×32: the strongest in each 2×2 window
    # 64 kernels of 3×3 over those 32 maps: combinations of strokes (corners, loops, crossings).
    x = layers.Conv2D(64, 3, name="conv2")(x)  # → 10×10×64
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # → 5×5×64
    x = layers.Flatten(name="flatten")(x)  # → 1,600 features
    x = layers.Dropout(0.25, name="dropout")(x)  # silence a random quarter: less memorising
    # Ten class probabilities, in float32 even when the layers above compute in bfloat16.
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def build_best_model(augment: bool = True) -> keras.Model:
    """--preset best: a third convolution block and no dense hidden layer, 150,602 parameters.
    No batch normalisation: Keras 3's is not a fused op and tripled the step time on a CPU."""
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    if augment:
        x = augmentation()(x)
    x = layers.Conv2D(32, 5, name="conv1")(x)  # → 24×24×32
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)  # → 12×12×32
    # "same" padding keeps the size: two 3×3 convolutions in a row see 5×5 of these maps.
    x = layers.Conv2D(64, 3, padding="same", name="conv2_1")(x)  # → 12×12×64
    x = layers.ReLU(name="relu2_1")(x)
    x = layers.Conv2D(64, 3, padding="same", name="conv2_2")(x)  # → 12×12×64
    x = layers.ReLU(name="relu2_2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)  # → 6×6×64
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Conv2D(128, 3, name="conv3")(x)  # → 4×4×128
    x = layers.ReLU(name="relu3")(x)
    x = layers.Flatten(name="flatten")(x)  # → 2,048 features
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn_best")


def augmentation() -> keras.Sequential:
    """Digits written a little differently: turned up to ±14°, zoomed and moved up to 10%, anew in
    every step and never when the model answers. Black paper fills what moves in."""
    return keras.Sequential([
        layers.RandomRotation(0.04, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
    ], name="augmentation")


# --shifted-views: the digit as given and moved one pixel up, down, left and right; the answer is
# the average of the five answers, so one view's slip is outvoted by four.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # pixels up, pixels left; -1: down, right


def with_shifted_views(network: keras.Model) -> keras.Model:
    """The trained ``network`` inside a model of standard layers (safe mode loads it) that
    answers with the average over the SHIFTS. It learns nothing: the same weights."""
    pixels = keras.Input(shape=(28, 28, 1), name="pixels")
    padded = layers.ZeroPadding2D(1, name="pad")(pixels)  # 30×30: a black border of one pixel
    answers = []
    for rows, columns in SHIFTS:  # 1 + rows cut off the top, 1 - rows off the bottom
        crop = ((1 + rows, 1 - rows), (1 + columns, 1 - columns))
        answers.append(network(layers.Cropping2D(crop, name=f"view_{rows}_{columns}")(padded)))
    outputs = layers.Average(dtype="float32", name="probabilities")(answers)
    model = keras.Model(pixels, outputs, name=f"{network.name}_views")
    model.compile(loss=network.loss, metrics=["accuracy"])  # to test it: it never trains
    model.optimizer.build(model.trainable_variables)  # else loading it warns of a mismatch
    return model


def one_cycle(peak: float, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The rate rises from 0 to ``peak`` over the first 10% of the steps (no large nudges while the
    weights are still random), then falls to 0 along half a cosine: small, careful last steps."""
    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0,
                                                  decay_steps=max(1, steps - warmup),
                                                  warmup_target=peak, warmup_steps=warmup)


class EpochSeconds(keras.callbacks.Callback):
    """Each epoch's seconds, into the logs that CSVLogger (later in the list) writes."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.started


class Backup(keras.callbacks.BackupAndRestore):
    """Keras' backup of the weights and the epoch. Keras writes its two files in place: if one was
    cut off (kill -9), go back to its copy of the epoch before (double_checkpoint=True)."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError):  # the epoch before's copies, or none: start anew
            for name in ("latest.weights.h5", "training_metadata.json"):
                path = os.path.join(self.backup_dir, name)
                if os.path.exists(path + ".bkp"):
                    shutil.copyfile(path + ".bkp", path)
                elif os.path.exists(path):
                    os.remove(path)
            super().on_train_begin(logs)


def main(argv=None, callbacks=()) -> int:
    """``callbacks``: more Keras callbacks for fit() and evaluate() (the tools use them)."""
    args = parse_args(argv)

    # Data: training images (some held out to validate on) and test images, kept for the end.
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    if (args.train_size or 0) > len(x_train):
        fail(f"--train-size {args.train_size} is larger than the {len(x_train)} training images; "
             "use at most that")
    x_train, y_train = x_train[: args.train_size, ..., None], y_train[: args.train_size]
    y_train = keras.utils.to_categorical(y_train, 10)  # 3 → [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    y_test = keras.utils.to_categorical(y_test, 10)
    cut = len(x_train) - round(len(x_train) * args.val_split)  # fit() validates on the rest
    if cut < 1:
        fail(f"only {len(x_train)} training images: too few to hold out a validation set")
    x_train, y_train, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    folder = run_folder(args)  # this run's backup, until the model is saved
    print(f"training on {len(x_train)} images, validating on {len(x_val)}; backend "
          f"{keras.backend.backend()}, precision {args.precision}, seed {args.seed}", flush=True)

    # The network, from a seed: the same seed, the same weights, shuffling and dropout.
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.precision)
    model = (build_best_model if args.preset == "best" else build_model)(args.augment)
    model.summary()

    # Compile: Adam with a one-cycle learning rate (and, --average-weights, a running average of
    # the weights over about the last fifth of the steps, put in the network when fit() ends);
    # the loss is the cross-entropy, -log of the probability given to the right digit.
    steps = math.ceil(len(x_train) / args.batch_size) * args.epochs
    adam = keras.optimizers.Adam(one_cycle(args.learning_rate, steps), use_ema=args.average_weights,
                                 ema_momentum=max(0.0, 1 - 5 / steps))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    model.compile(optimizer=adam, loss=loss, metrics=["accuracy"])

    # Fit, with Keras' callbacks: after every epoch the network (serve.py's live page shows it),
    # a row of history.csv, and a backup that --resume goes on from.
    fit_callbacks = [EpochSeconds(),
                     keras.callbacks.ModelCheckpoint(folder + "/epoch-{epoch}.keras"),
                     keras.callbacks.CSVLogger(folder + "/history.csv", append=True),
                     Backup(folder + "/backup", double_checkpoint=True, delete_checkpoint=False),
                     keras.callbacks.TerminateOnNaN()]
    if args.tensorboard:
        fit_callbacks.append(keras.callbacks.TensorBoard(args.tensorboard))
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(x_val, y_val) if len(x_val) else None,
              callbacks=[*fit_callbacks, *callbacks], verbose=1 if sys.stdout.isatty() else 2)
    if model.stop_training:  # by TerminateOnNaN: its backup holds no weights to go on from
        shutil.rmtree(folder, ignore_errors=True)
        fail("training diverged (the loss is not a number); try a lower --learning-rate")
    with open(folder + "/history.csv", newline="") as file:
        rows = {row["epoch"]: row for row in csv.DictReader(file)}  # --resume: the last row wins
    history = [{key: float(value) for key, value in row.items() if value != "NA"}
               for row in rows.values()]

    # Test, once, on the 10,000 images no step has seen (--shifted-views: five views of each).
    model = with_shifted_views(model) if args.shifted_views else model
    test_loss, test_accuracy = model.evaluate(x_test[..., None], y_test, batch_size=2048,
                                              callbacks=list(callbacks), verbose=0)

    # Save the model, its history and a record of the run; then the run's backup goes.
    record = {"name": "cnn", **vars(args), "test_loss": test_loss, "test_accuracy": test_accuracy,
              "test_errors": round((1 - test_accuracy) * len(x_test)), "test_images": len(x_test),
              "train_images": len(x_train), "validation_images": len(x_val),
              "training_seconds": sum(row["epoch_seconds"] for row in history),
              "parameters": model.count_params(), "backend": keras.backend.backend(),
              "keras": keras.__version__, "platform": platform.platform()}
    save(f"{args.models_dir}/cnn.keras", model)
    save(f"{args.results_dir}/cnn_history.json", {"name": "cnn", "epochs": history})
    save(f"{args.results_dir}/cnn_run.json", record)
    with open(f"{args.results_dir}/runs.jsonl", "ab") as file:  # every run, ever: a line each
        end = file.tell()
        try:
            file.write((json.dumps(record) + "\n").encode())
            file.flush()
        except OSError:  # a full disk: no half line
            file.truncate(end)
            raise
    shutil.rmtree(folder, ignore_errors=True)
    print(f"cnn: test accuracy {test_accuracy:.2%} ({record['test_errors']} errors / "
          f"{len(x_test):,}), {record['parameters']:,} parameters, trained "
          f"{record['training_seconds']:.1f} s -> {args.models_dir}/cnn.keras", flush=True)
    return 0


def run_folder(args) -> str:
    """A new folder of this run's own, MODELS/.cnn-run-PID-XXXXXXXX, with its flags: two runs
    never share one. With --resume, the newest such folder, if its flags are the same."""
    config = {key: value for key, value in vars(args).items()
              if key not in ("resume", "tensorboard")}
    if args.resume:
        found = glob.glob(f"{args.models_dir}/.cnn-run-*/config.json")
        found.sort(key=os.path.getmtime)
        if not found:
            fail(f"nothing to resume in {args.models_dir}; run the command without --resume")
        with open(found[-1]) as file:
            changed = [key for key, value in json.load(file).items() if config.get(key) != value]
        if changed:
            fail("--resume needs the same flags as the stopped run; these differ: "
                 + ", ".join("--" + key.replace("_", "-") for key in changed))
        return os.path.dirname(found[-1])
    for option, path in (("--models-dir", args.models_dir), ("--results-dir", args.results_dir)):
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            fail(f"cannot write to the folder {path!r}: {error.strerror}; "
                 f"choose another with {option}")
    folder = tempfile.mkdtemp(prefix=f".cnn-run-{os.getpid()}-", dir=args.models_dir)  # a new one
    save(folder + "/config.json", config)
    return folder


def save(path: str, content) -> None:
    """A model or a JSON record, written under a temporary name, then renamed: a stop or a full
    disk leaves the old file whole. Windows refuses while a reader has it open: wait up to 10 s."""
    temp = f"{path}.{os.getpid()}.tmp.keras"  # Keras wants the .keras ending
    try:
        if isinstance(content, keras.Model):
            content.save(temp)
        else:
            with open(temp, "w") as file:
                json.dump(content, file, indent=2)
        for _ in range(100):
            try:
                return os.replace(temp, path)
            except PermissionError:
                time.sleep(0.1)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def fail(message: str):
    """A problem the user can fix: one line on stderr, exit code 1."""
    raise SystemExit(f"error: {message}")


# A stop or a fault, said in one line and an exit code, never a traceback.
class StopBetweenSteps(keras.callbacks.Callback):
    """Ctrl-C, SIGTERM or SIGHUP: noted, and raised when a step (or fit(), or the test) ends, for
    one raised inside TensorFlow's own code can come out as another error. A second one acts at
    once; one during the final save lets the save finish."""

    def __init__(self):
        super().__init__()
        self.signum = 0

    def on_signal(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.signum = signum

    def stop_if_asked(self, *args, **kwargs):
        if self.signum:
            raise KeyboardInterrupt(signal.Signals(self.signum).name)

    on_train_batch_end = on_test_batch_end = on_test_end = on_train_end = stop_if_asked


def leave(code: int):
    """Exit now, while the fault is still held: after a failed save, Python's clean-up of the file
    h5py was writing can crash the interpreter."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def excepthook(kind, error, traceback):
    """After a full disk mid-save, h5py fails to close its file as Python cleans up, with a
    traceback each time: the one line printed has said what went wrong."""
    if "decrement id ref count" not in str(error):
        sys.__excepthook__(kind, error, traceback)


if __name__ == "__main__":
    stop = StopBetweenSteps()
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop.on_signal)
    sys.excepthook = excepthook
    sys.unraisablehook = lambda fault: excepthook(fault.exc_type, fault.exc_value, None)
    try:
        leave(main(callbacks=[stop]))
    except KeyboardInterrupt as interrupt:
        name = str(interrupt) or "SIGINT"
        print(f"\nstopped ({name}): no file was half-written; run the same command with --resume "
              "to go on from the last finished epoch", file=sys.stderr)
        leave(128 + signal.Signals[name])
    except OSError as error:  # a full disk, a read-only folder (h5py's message has two lines)
        reason = os.strerror(error.errno) if error.errno else str(error).splitlines()[0]
        where = os.path.dirname(error.filename) if error.filename else "an output folder"
        print(f"error: {reason} ({where}); the saved files are whole: free some space or choose "
              "another folder, then run the same command with --resume", file=sys.stderr)
        leave(1)
