"""Train a convolutional neural network (CNN) on MNIST and save it to models/cnn.keras.

A CNN slides small learned kernels over the image: a stroke detector learned in one corner works
everywhere (parameter sharing), and pooling keeps the strongest responses while it shrinks the maps.
Read top to bottom: flags → data → the network → compile → fit → test → save. The code that keeps a
run safe (Ctrl-C, a full disk, two runs at once) sits at the bottom, under its own heading.

    python train_cnn.py                         # the default CNN: 99% test accuracy in 5 epochs
    python train_cnn.py --preset best           # a deeper CNN, 20 epochs of moved digits: ~99.6%
    python train_cnn.py --data data/mnist.npz   # offline: python get_mnist.py writes it
"""

import argparse
import contextlib
import csv
import errno
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
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
from keras import layers


def fail(message: str):
    """A problem the user can fix: one line on stderr, exit code 1 (`finally` blocks still run)."""
    raise SystemExit(f"error: {message}")


# Flags: every knob has a default. A preset sets the defaults of the flags it names; a flag given on
# the command line wins (docs/performance-float32.md: how they were measured). Words: a step shows
# the network one batch of images and nudges its weights (by the learning rate, with the Adam
# rule); an epoch is one pass over all the training images.
PRESETS = {
    "fast": dict(epochs=5, batch_size=384, learning_rate=6e-3, augment=False, val_split=0.1,
                 label_smoothing=0.0, average_weights=False, shifted_views=False),
    "best": dict(epochs=20, batch_size=256, learning_rate=3e-3, augment=True, val_split=0.0,
                 label_smoothing=0.1, average_weights=True, shifted_views=True),
}


def parse_args(argv=None) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)  # --preset first, so --help shows its defaults
    first.add_argument("--preset", default="fast")
    preset = PRESETS.get(first.parse_known_args(argv)[0].preset, PRESETS["fast"])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)  # Safety
    flag = parser.add_argument
    flag("--preset", choices=PRESETS, default="fast", help="network and defaults (best: deeper)")
    flag("--epochs", type=int, default=preset["epochs"], help="passes over the training images")
    flag("--batch-size", type=int, default=preset["batch_size"], help="images per step and device")
    flag("--learning-rate", type=float, default=preset["learning_rate"], help="peak rate of Adam")
    flag("--seed", type=int, default=1, help="seed for the weights, the shuffling and dropout")
    flag("--train-size", type=int, metavar="N", help="train on the first N training images only")
    flag("--val-split", type=float, default=preset["val_split"], help="share held out to validate")
    flag("--augment", action=argparse.BooleanOptionalAction, default=preset["augment"],
         help="train on randomly moved digits")
    flag("--label-smoothing", type=float, default=preset["label_smoothing"],
         help="share of the right label's 1 spread over the ten digits")
    flag("--average-weights", action=argparse.BooleanOptionalAction,
         default=preset["average_weights"], help="end on the weights averaged over the last steps")
    flag("--shifted-views", action=argparse.BooleanOptionalAction,
         default=preset["shifted_views"], help="answer with the average of five shifted views")
    flag("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto",
         help="auto: bfloat16 on CPUs with AMX-BF16 units (recent Xeons), float32 elsewhere")
    flag("--deterministic", action="store_true", help="same --seed, same history (slower)")
    flag("--resume", action="store_true", help="go on with an interrupted run")
    flag("--tensorboard", metavar="DIR", help="also write TensorBoard logs to DIR")
    flag("--distribute", choices=("none", "mirrored"), default="none",
         help="mirrored: a copy of the network per GPU (no GPU: on two logical CPUs, to try it)")
    flag("--data", metavar="PATH",
         help="a Keras-style .npz (python get_mnist.py makes one); omitted: keras.datasets")
    flag("--models-dir", default="models", metavar="DIR", help="where the trained model goes")
    flag("--results-dir", default="results", metavar="DIR", help="where its records go")
    args = parser.parse_args(argv)
    check_flags(parser, args)  # see Safety
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
    check_data(path, x_train, y_train, x_test, y_test)  # shapes, types, labels: see Safety
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


def split_data(args, images, labels):
    """The first --train-size images, with a channel axis (N, 28, 28, 1: one grey channel), their
    labels one-hot, and the last --val-split share of them held out: fit() scores the network on
    these after every epoch, to show whether it learns digits or memorises its training images."""
    if (args.train_size or 0) > len(images):
        fail(f"--train-size {args.train_size} is larger than the {len(images)} training images; "
             "use at most that")
    images, labels = images[: args.train_size, ..., None], one_hot(labels[: args.train_size])
    held_out = max(1, round(len(images) * args.val_split)) if args.val_split else 0
    if held_out >= len(images):
        fail(f"only {len(images)} training images: too few to hold out a validation set; "
             "use a larger --train-size")
    cut = len(images) - held_out
    print(f"training on {cut} images, validating on {held_out}", flush=True)
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def one_hot(labels):
    """Each label as a row of ten numbers, 1 for the right digit and 0 for the others: what the
    loss compares the ten probabilities with."""
    return keras.utils.to_categorical(labels, 10)


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


# Test-time views (--shifted-views): the digit as given and moved one pixel up, down, left and
# right. The answer is the average of the five answers: one view's slip is outvoted by four.
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # pixels up, pixels left; -1: down, right


def with_shifted_views(network: keras.Model) -> keras.Model:
    """A model around the trained ``network`` that answers with the average over the SHIFTS, from
    standard layers only (it loads in Keras' safe mode). It learns nothing: same weights."""
    pixels = keras.Input(shape=(28, 28, 1), name="pixels")
    padded = layers.ZeroPadding2D(1, name="pad")(pixels)  # 30×30: a black border of one pixel
    answers = []
    for rows, columns in SHIFTS:  # 1 + rows cut off the top, 1 - rows off the bottom
        crop = ((1 + rows, 1 - rows), (1 + columns, 1 - columns))
        view = layers.Cropping2D(crop, name=f"view_{rows}_{columns}")(padded)  # 28×28 again
        answers.append(network(view))
    outputs = layers.Average(dtype="float32", name="probabilities")(answers)
    model = keras.Model(pixels, outputs, name=f"{network.name}_views")
    model.compile(loss=network.loss, metrics=["accuracy"])  # to test it: it never trains
    model.optimizer.build(model.trainable_variables)  # else loading it warns of a mismatch
    return model


def augmentation() -> keras.Sequential:
    """Digits written a little differently: rotations up to 0.04 of a turn (±14°), zooms and shifts
    up to 10%, new in every step; off when the model answers. What moves into the picture is black
    paper ("constant"), not mirrored strokes."""
    return keras.Sequential([
        layers.RandomRotation(0.04, fill_mode="constant"),
        layers.RandomZoom(0.1, fill_mode="constant"),
        layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
    ], name="augmentation")


# Compile, which compiles nothing: it sets how the network learns (Adam, with a learning rate that
# warms up and cools down), what it minimises (the cross-entropy: -log of the probability given to
# the right digit, its label a row of ten numbers, 1 for the digit) and what it reports (accuracy).
def compile_model(model: keras.Model, args, steps: int) -> None:
    """--label-smoothing 0.1 turns the label's 1 into 0.91 and each 0 into 0.01: a network never
    quite certain overfits less. --average-weights keeps a running average of the weights over
    about the last fifth of the steps (Adam's use_ema); fit() ends by putting it in the network."""
    adam = keras.optimizers.Adam(one_cycle(args.learning_rate, steps), use_ema=args.average_weights,
                                 ema_momentum=max(0.0, 1 - 5 / steps))
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    model.compile(optimizer=adam, loss=loss, metrics=["accuracy"])


def one_cycle(peak: float, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The rate rises from 0 to ``peak`` over the first 10% of the steps (no large nudges while the
    weights are still random), then falls to 0 along half a cosine: small, careful last steps."""
    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0,
                                                  decay_steps=max(1, steps - warmup),
                                                  warmup_target=peak, warmup_steps=warmup)


# Fit: Keras' own loop, and callbacks: objects whose on_epoch_end (and so on) fit() calls, in the
# order of the list, each with the same logs of the epoch. Keras sets their self.model.
class EpochTimer(keras.callbacks.Callback):
    """Each epoch's seconds, added to the epoch's logs: before CSVLogger in the list, which writes
    them to history.csv (epoch numbers count from 0 there, as in Keras)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["epoch_seconds"] = time.perf_counter() - self.started


class SaveEachEpoch(keras.callbacks.Callback):
    """The network as it stands after every epoch, so that serve.py can show the run training
    (save_epoch: see Safety)."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch, logs=None):
        save_epoch(self.model, self.folder, epoch + 1)


def fit_callbacks(args, backup: str) -> list:
    """In this order: the epoch's seconds, the network as it stands, a row of history.csv, a backup
    (--resume goes on from it; see Safety), a stop if the loss is NaN, and TensorBoard's logs."""
    callbacks = [EpochTimer(), SaveEachEpoch(backup),
                 keras.callbacks.CSVLogger(os.path.join(backup, "history.csv"), append=True),
                 BackupEveryEpoch(os.path.join(backup, "state")), keras.callbacks.TerminateOnNaN()]
    if args.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(args.tensorboard))
    return callbacks


# Save: the model, its history (a row per epoch, from history.csv, which survives --resume where
# fit()'s own History would not) and a record of the run. Checks and writes: see Safety.
def save(model: keras.Model, record: dict, backup: str, args) -> None:
    history = read_history(os.path.join(backup, "history.csv"), args.epochs)
    record["test_errors"] = round((1 - record["test_accuracy"]) * record["test_images"])
    record["training_seconds"] = sum(row["epoch_seconds"] for row in history)
    record.update(parameters=model.count_params(), environment=environment())
    name, folder = record["name"], args.results_dir
    path = os.path.join(args.models_dir, f"{name}.keras")
    save_all({path: model,  # all of them, or (on any failure) none
              os.path.join(folder, f"{name}_history.json"): {"name": name, "epochs": history},
              os.path.join(folder, f"{name}_run.json"): record}, folder)
    remove_folder(backup)
    print(f"{name}: test accuracy {record['test_accuracy']:.2%} ({record['test_errors']} errors / "
          f"{record['test_images']:,}), {record['parameters']:,} parameters, trained "
          f"{record['training_seconds']:.1f} s -> {path}", flush=True)


def main(argv=None, stop=None, extra_callbacks=()) -> int:  # the last two: run() and tools
    # Flags.
    args = parse_args(argv)
    stop = stop or StopBetweenSteps()  # Ctrl-C takes effect between two steps (see Safety)

    # Data: training images (some held out to validate on) and test images, kept for the end.
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    (x_train, y_train), (x_val, y_val) = split_data(args, x_train, y_train)

    # The network, from a seed: the same seed, the same weights, shuffling and dropout.
    keras.utils.set_random_seed(args.seed)
    strategy, precision, batch = choose_devices_and_precision(args)  # on most: 1 CPU, float32
    with strategy.scope():  # its weights live on one device, or mirrored on several
        build = build_best_model if args.preset == "best" else build_model
        model = build(args.augment)

        # Compile: how it learns (Adam, a one-cycle rate) and what it minimises (see above).
        compile_model(model, args, steps=math.ceil(len(x_train) / batch) * args.epochs)
    model.summary()

    # Fit, with a backup after every epoch; Ctrl-C (stop) takes effect after the backup.
    backup = check_and_lock("cnn", model, args, stop)  # room, one run at a time (see Safety)
    model.fit(x_train, y_train, batch_size=batch, epochs=args.epochs,
              callbacks=[*fit_callbacks(args, backup), stop, *extra_callbacks],
              validation_data=(x_val, y_val) if len(x_val) else None,
              verbose=1 if sys.stdout.isatty() else 2)

    # Test, once, on the 10,000 images no step has seen (--shifted-views: five views of each).
    with strategy.scope():
        model = with_shifted_views(model) if args.shifted_views else model
    test_loss, test_accuracy = model.evaluate(x_test[..., None], one_hot(y_test), batch_size=2048,
                                              callbacks=[stop], verbose=0)

    # Save the model and its records (then the backup folder goes).
    record = {"name": "cnn", **vars(args), "precision": precision, "test_loss": test_loss,
              "test_accuracy": test_accuracy, "test_images": len(x_test),
              "train_images": len(x_train), "validation_images": len(x_val),
              "global_batch_size": batch, "replicas": strategy.num_replicas_in_sync}
    save(model, record, backup, args)
    return 0


# ------------------------------------------------------------------------------------------------
# Safety, and speed: what keeps a run from losing work (Ctrl-C, kill -9, a full disk, two runs at
# once), on Windows too; devices and precision. A learner can skip it.
# ------------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's line breaks and shows every flag's default."""


def check_flags(parser: argparse.ArgumentParser, args) -> None:
    """Values no run can use: argparse's usage, one error line and exit code 2."""
    for name, value, low in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--train-size", args.train_size, 1), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            parser.error(f"{name} must be at least {low}, got {value}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be greater than 0, got {args.learning_rate}")
    if not 0 <= args.val_split < 1:
        parser.error(f"--val-split must be at least 0 and less than 1, got {args.val_split}")
    if not 0 <= args.label_smoothing < 1:
        parser.error("--label-smoothing must be at least 0 and less than 1, "
                     f"got {args.label_smoothing}")


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


def read_history(path: str, epochs: int) -> list:
    """history.csv as a list of rows, one per epoch (after --resume, an epoch's last row wins), or
    one line if the loss became NaN."""
    with open(path, newline="") as file:
        rows = {row["epoch"]: {key: float(value) for key, value in row.items() if value != "NA"}
                for row in csv.DictReader(file)}
    history = sorted(rows.values(), key=lambda row: row["epoch"])
    if len(history) < epochs or not all(math.isfinite(row["loss"]) for row in history):
        fail(f"training diverged (the loss is not a number) after {len(history)} epochs; "
             "try a lower --learning-rate")
    return history


def check_and_lock(name: str, model: keras.Model, args, stop) -> str:
    """Before training: writable folders with room for what the run writes, one run per models
    folder (``stop`` holds the lock), and the backup folder: emptied, or with --resume, left by an
    interrupted run with the same flags. Returns the backup folder."""
    backup = os.path.join(args.models_dir, f".resume-{name}")
    config = {**vars(args), "resume": True}
    if args.resume:  # checked before any folder is made: a refused run creates nothing
        check_resume(backup, config)
    folders = {"--models-dir": args.models_dir, "--results-dir": args.results_dir}
    if args.tensorboard:
        folders["--tensorboard"] = args.tensorboard
    # The models folder holds two backups and the new model beside the old (weights and Adam's
    # moments, float32), and two epochs' networks while one replaces the other (weights alone).
    params = model.count_params()
    needs = {"--models-dir": 3 * (12 * params + 2**18) + 2 * (4 * params + 2**18),
             "--results-dir": 2**20, "--tensorboard": 2**22}
    for flag, folder in folders.items():
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as error:
            fail(f"cannot write to the folder {folder!r}: {error.strerror}; "
                 f"choose another with {flag}")
    for flag, folder in folders.items():  # folders on one disk share its free space
        disk = os.stat(folder).st_dev
        total = sum(needs[f] for f, other in folders.items() if os.stat(other).st_dev == disk)
        free = shutil.disk_usage(folder).free
        if free < total:
            fail(f"not enough disk space: {folder} has {free / 2**20:,.1f} MiB free, but this "
                 f"run writes about {total / 2**20:,.1f} MiB there; free some space or choose "
                 f"another {flag}")
    stop.lock = hold_lock(os.path.join(args.models_dir, f".{name}.lock"), f"training run of {name}")
    stop.waiting = True  # from here on, a stop waits for the end of a step
    stop.backup = backup  # a failed write without a file's name (in fit()) is in there
    if args.resume:
        return backup
    if not remove_folder(backup):
        fail(f"cannot empty {backup}: another program has a file in it open (serve.py?); "
             "close it and run the same command again")
    os.makedirs(backup)
    try:
        with open(os.path.join(backup, "config.json"), "w") as file:
            json.dump(config, file)
    except OSError as error:  # name the folder in the one line printed
        error.filename = error.filename or file.name
        raise
    return backup


def check_resume(backup: str, config: dict) -> None:
    """The saved optimizer state only means something with the same flags (--tensorboard aside)."""
    try:
        with open(os.path.join(backup, "config.json")) as file:
            saved = json.load(file)
    except (OSError, ValueError):
        fail(f"nothing to resume in {backup}; run the command without --resume")
    changed = [key for key in config if saved.get(key) != config[key] and key != "tensorboard"]
    if changed:
        fail("--resume needs the same flags as the interrupted run; these differ: "
             + ", ".join("--" + key.replace("_", "-") for key in changed))


def choose_devices_and_precision(args) -> tuple:
    """Where to compute (tf.distribute: one device, or mirrored on several, each step's batch split
    between them) and in which precision (bfloat16 only where it was measured faster). On most
    machines: one CPU, float32. Before the network is built: both apply to layers made after."""
    strategy = tf.distribute.get_strategy()  # the default: one device
    if args.distribute == "mirrored":
        if not tf.config.list_physical_devices("GPU"):  # no GPU: two logical CPUs, to try it
            cpu = tf.config.list_physical_devices("CPU")[0]
            two = [tf.config.LogicalDeviceConfiguration()] * 2
            tf.config.set_logical_device_configuration(cpu, two)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    precision = args.precision
    if precision == "auto":
        precision = "mixed_bfloat16" if amx_bf16() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    batch = args.batch_size * strategy.num_replicas_in_sync
    print(f"precision {precision}, batch {batch} over all devices, seed {args.seed}", flush=True)
    return strategy, precision, batch


def hold_lock(path: str, what: str):
    """An OS lock on a file, held until the process ends: the OS drops it then, however the process
    ends (kill -9 too), so it never goes stale. It must still be the file at ``path``: the run
    before may have just removed it."""
    while True:
        lock = open(path, "a+")  # noqa: SIM115 - held open until the run ends
        try:
            try:
                import fcntl  # Linux, macOS

                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # Windows locks bytes: one far past the PID, which others read
                import msvcrt

                lock.seek(1 << 20)
                msvcrt.locking(lock.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            time.sleep(0.1)  # the run that holds the lock writes its PID just after it takes it
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()  # Windows cannot remove an open file: the holder removes it at its end
            fail(f"another {what} (PID {holder}) is writing to {os.path.dirname(path)}; wait for "
                 "it to finish, or give this run another --models-dir")
        if os.path.exists(path) and os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            return lock
        lock.close()


def release_lock(lock) -> None:
    """Remove the lock file, then let go of it, so that no other run takes a file that is going.
    Windows refuses to remove an open file: there it goes after the close, unless another run has
    opened it meanwhile (that run then takes it over)."""
    try:
        os.remove(lock.name)
        lock.close()
    except OSError:
        lock.close()
        with contextlib.suppress(OSError):
            os.remove(lock.name)


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


def remove_folder(path: str, seconds: float = 10) -> bool:
    """shutil.rmtree, waiting while a reader has a file in it open on Windows. False: some stay."""
    deadline = time.monotonic() + seconds
    shutil.rmtree(path, ignore_errors=True)
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
        shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)


def amx_bf16() -> bool:
    """A CPU with AMX-BF16 units (recent Xeons; Linux tells) and no GPU."""
    return "amx_bf16" in cpu_info() and not tf.config.list_physical_devices("GPU")


def cpu_info() -> str:
    if not os.path.isfile("/proc/cpuinfo"):  # not Linux
        return platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as file:
        return file.read()


def environment() -> dict:
    """What produced a record: the versions, the CPU, the GPU."""
    names = [line.split(":")[1].strip() for line in cpu_info().splitlines()
             if line.startswith("model name")]
    gpus = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "platform": platform.platform(),
            "cpu": f"{(names or [cpu_info()])[0]}, {os.cpu_count()} cores",
            "gpu": ", ".join(gpus) or "none"}


class BackupEveryEpoch(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, kept after training. If the only checkpoint was cut off while it
    was written (kill -9 in the first save), start over, saying so."""

    def __init__(self, folder: str):
        super().__init__(folder, double_checkpoint=True, delete_checkpoint=False)

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except OSError:
            print("the backup was cut off while it was being written (killed mid-save?): "
                  "starting over", flush=True)
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def save_all(files: dict, results_dir: str) -> None:
    """The model and its records, all or nothing: each is written to a temp file beside its target;
    only when all are written and the run's line (the last of ``files``) is appended to runs.jsonl
    do they replace the old ones. Ctrl-C or a full disk changes none."""
    prefix = f".tmp-{os.getpid()}-"
    temps = {path: os.path.join(os.path.dirname(path), prefix + os.path.basename(path))
             for path in files}
    try:
        for path, payload in files.items():
            try:
                if isinstance(payload, keras.Model):
                    payload.save(temps[path])
                else:
                    with open(temps[path], "w") as file:
                        file.write(json.dumps(payload, indent=2) + "\n")
            except OSError as error:  # name the folder in the one line printed
                error.filename = error.filename or path
                raise
        # One write per line: whole lines, even when two runs end together. From here on a stop
        # waits: the log line and the renames go together.
        with SignalsHeld(), open(os.path.join(results_dir, "runs.jsonl"), "ab") as file:
            size = file.seek(0, os.SEEK_END)
            try:
                file.write((json.dumps(list(files.values())[-1]) + "\n").encode())
                file.flush()
            except OSError as error:
                file.truncate(size)  # a full disk mid-line: cut the half line off again
                error.filename = error.filename or file.name
                raise
            for path, temp in temps.items():
                replace(temp, path)
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)


class SignalsHeld:
    """A block that Ctrl-C, SIGTERM and SIGHUP do not cut: a signal is noted, and raised again as
    the block ends, to whatever handled it before."""

    def __enter__(self):
        self.noted = []
        self.before = {signum: signal.getsignal(signum) for signum in stop_signals()}
        for signum in self.before:
            signal.signal(signum, self.note)

    def note(self, signum, frame):
        self.noted.append(signum)

    def __exit__(self, *exception):
        for signum, handler in self.before.items():
            signal.signal(signum, handler)
        if self.noted:
            signal.raise_signal(self.noted[0])


def save_epoch(model: keras.Model, folder: str, epoch: int) -> None:
    """The network after an epoch, for watching a run while it trains: ``epoch-K.keras``, written
    beside and then renamed, so that a reader finds a whole file or none. Without the optimizer's
    state (the backup has it): a third of the size. The epoch before's file goes, unless a reader
    has it open on Windows (then it goes with the folder)."""
    view = keras.Model(model.inputs, model.outputs, name=model.name)  # same layers, no optimizer
    temp = os.path.join(folder, f".tmp-epoch-{epoch}.keras")
    try:
        view.save(temp)
        os.replace(temp, os.path.join(folder, f"epoch-{epoch}.keras"))
    finally:  # a full disk mid-save leaves no half file behind
        if os.path.exists(temp):
            os.remove(temp)
    with contextlib.suppress(OSError):
        os.remove(os.path.join(folder, f"epoch-{epoch - 1}.keras"))


class StopBetweenSteps(keras.callbacks.Callback):
    """Ctrl-C, SIGTERM and SIGHUP. Once the run holds its lock, the signal handler only notes a
    signal, and this callback (the last of fit()'s, and evaluate()'s) raises it between two steps:
    raised where it lands, inside TensorFlow's own code, it can break TensorFlow. A second signal
    acts at once; one during the final save waits for it. The callback knows where training
    stands, for the line printed on a stop (an epoch counts as saved after its backup), and holds
    the lock."""

    def __init__(self):
        super().__init__()
        self.signum = self.epoch = self.epochs = self.saved = 0
        self.waiting, self.lock, self.backup = False, None, None

    def on_signal(self, signum, frame):
        again, self.signum = self.signum, signum
        if again or not self.waiting:  # a second Ctrl-C does not wait
            raise KeyboardInterrupt

    def stop_if_asked(self):
        if self.signum:
            raise KeyboardInterrupt

    def on_train_batch_end(self, batch, logs=None):
        self.stop_if_asked()

    def on_test_batch_end(self, batch, logs=None):
        self.stop_if_asked()

    def on_train_begin(self, logs=None):
        self.epochs = self.params["epochs"]

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.saved = epoch + 1, self.saved or epoch

    def on_epoch_end(self, epoch, logs=None):
        self.saved = epoch + 1
        self.stop_if_asked()

    def message(self) -> str:
        signum = self.signum or signal.SIGINT
        name = signal.Signals(signum).name
        what = "interrupted" if signum == signal.SIGINT else f"stopped ({name})"
        if not self.epoch:
            return f"{what}: nothing was half-written; run the same command again"
        where = "in" if self.saved < self.epoch else "after"
        how = "no epoch was backed up yet: run the same command again"
        if self.saved:
            how = f"run the same command with --resume to go on from epoch {self.saved + 1}"
        if self.saved >= self.epochs:
            how = "training had ended: run the same command with --resume to test and save it"
        where = f"{where} epoch {self.epoch} of {self.epochs}"
        return f"{what} {where}: nothing was half-written; {how}"


def no_room(error: OSError, folder=None) -> str:
    """One line for a full disk, a quota or a read-only folder, naming the folder: the error's file,
    else the file in h5py's text (which also holds the errno), else ``folder``."""
    text = str(error)
    number = errno.ENOSPC if "errno = 28," in text else error.errno
    reasons = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its disk quota",
               errno.EROFS: "is read-only"}
    if number not in reasons:
        return f"error: {error}"
    if error.filename:
        folder = os.path.dirname(error.filename)
    elif "filename = '" in text:
        folder = os.path.dirname(text.partition("filename = '")[2].partition("'")[0])
    where = folder or "one of the output folders"
    return (f"error: {where} {reasons[number]} ({os.strerror(number)}); nothing half-written was "
            "left: free some space, or choose another folder, and run the same command again")


def h5py_could_not_close(error: BaseException) -> bool:
    """After a full disk mid-save, h5py fails to let go of the file it wrote and says so twice, with
    a traceback, as Python cleans up (sys.excepthook, sys.unraisablehook): one line is enough."""
    return isinstance(error, RuntimeError) and "decrement id ref count" in str(error)


def excepthook(kind, error, traceback) -> None:
    if not h5py_could_not_close(error):
        sys.__excepthook__(kind, error, traceback)


def unraisablehook(unraisable) -> None:
    if not h5py_could_not_close(unraisable.exc_value):
        sys.__unraisablehook__(unraisable)


def stop_signals() -> list:
    """Ctrl-C, SIGTERM and SIGHUP (Windows has none), less those ignored on purpose (nohup, `&`)."""
    return [signum for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
            if signum and signal.getsignal(signum) is not signal.SIG_IGN]


def run(main) -> int:
    """The entry point: every way a run can end is one line and an exit code, never a traceback."""
    stop, signals = StopBetweenSteps(), stop_signals()
    sys.excepthook, sys.unraisablehook = excepthook, unraisablehook
    for signum in signals:
        signal.signal(signum, stop.on_signal)
    try:
        code = main(stop=stop)
    except KeyboardInterrupt:
        code = 128 + (stop.signum or signal.SIGINT)
        print("\n" + stop.message(), file=sys.stderr)
    except OSError as error:
        code = 1
        print(no_room(error, stop.backup), file=sys.stderr)
    finally:
        if stop.lock:
            release_lock(stop.lock)
    for signum in signals:  # TensorFlow takes a moment to shut down: a stop now changes nothing
        signal.signal(signum, lambda signum, frame: os._exit(code))
    return code


if __name__ == "__main__":
    code = run(main)
    if code:  # after a failed save, h5py's cleanup at the interpreter's exit can crash: skip it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
