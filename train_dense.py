"""Train a plain dense (fully connected) network on MNIST and save it to models/dense.keras.

It sees each image as 784 unrelated numbers: every hidden unit connects to every pixel, and nothing tells it that
neighbouring pixels belong together, or that a "7" two pixels to the left is still a "7". The CNN in train_cnn.py
builds that knowledge in; compare.py puts the two side by side. Read top to bottom: flags → data → the network →
compile → fit → test → save. The code that keeps a run safe sits at the bottom.

    python train_dense.py                    # 98.3% test accuracy in 14 short epochs
    python train_dense.py --data mnist.npz   # offline: a Keras-style .npz (python get_mnist.py makes one)
"""

import argparse
import contextlib
import csv
import errno
import gzip
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
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
from keras import layers

# Measured (docs/): a batch of 1024 and a higher peak learning rate train as well as smaller ones, in less time.
DEFAULTS = {"epochs": 14, "batch_size": 1024, "learning_rate": 5e-3}


def parse_args(argv=None) -> argparse.Namespace:
    """Every knob is a flag with a default."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    flag = parser.add_argument
    flag("--epochs", type=int, default=DEFAULTS["epochs"], help="passes over the training images")
    flag("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per step and device")
    flag("--learning-rate", type=float, default=DEFAULTS["learning_rate"], help="peak learning rate of Adam")
    flag("--seed", type=int, default=1, help="seed for the weights, the shuffling and dropout")
    flag("--train-size", type=int, metavar="N", help="train on the first N training images only")
    flag("--val-split", type=float, default=0.1, help="share held out to validate on (0: none)")
    flag("--augment", action="store_true", default=False, help="train on randomly moved digits")
    flag("--precision", choices=("auto", "float32", "mixed_bfloat16"), default="auto", help="auto: bfloat16 on "
         "CPUs with AMX-BF16 units (recent Xeons), float32 everywhere else, GPUs included")
    flag("--deterministic", action="store_true", help="the same --seed gives the same history (a little slower)")
    flag("--resume", action="store_true", help="go on with an interrupted run from its last finished epoch")
    flag("--tensorboard", metavar="DIR", help="also write TensorBoard logs to DIR")
    flag("--distribute", choices=("none", "mirrored"), default="none", help="mirrored: a copy of the network on "
         "every GPU (with none: on two logical CPUs), each step's batch split between them")
    flag("--data", metavar="PATH", help="a Keras-style .npz, or a folder of the four MNIST IDX files (plain or .gz); "
         "none: keras.datasets.mnist, which downloads MNIST once")
    flag("--models-dir", default="models", metavar="DIR", help="where the trained model goes")
    flag("--results-dir", default="results", metavar="DIR", help="where its records go")
    args = parser.parse_args(argv)
    for name, low in (("epochs", 1), ("batch_size", 1), ("train_size", 1), ("seed", 0)):
        if getattr(args, name) is not None and getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        parser.error(f"--learning-rate must be greater than 0, got {args.learning_rate}")
    if not 0 <= args.val_split < 1:
        parser.error(f"--val-split must be at least 0 and less than 1, got {args.val_split}")
    return args


# 1. Data: 28×28 grey images of handwritten digits, pixels 0-255, labels 0-9, checked whatever their source.
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


# 2. The network: Flatten → [Dense(512) → ReLU → Dropout 0.5] × 2 → Dense softmax, 670k parameters.
def build_model(augment: bool = False, units: tuple = (512, 512), dropout: float = 0.5) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1), name="pixels")  # raw pixels 0-255, the same input as the CNN's
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)  # 0-1, inside the model: the saved file takes raw pixels
    if augment:
        x = augmentation()(x)  # random small rotations, zooms and shifts, only while training
    x = layers.Flatten(name="flatten")(x)  # 28×28 → 784 numbers: the picture's layout is gone from here on
    for index, width in enumerate(units, start=1):
        # Every one of the 512 units weighs every input: 784 × 512 weights in the first layer alone.
        x = layers.Dense(width, activation="relu", name=f"dense{index}")(x)
        x = layers.Dropout(dropout, name=f"dropout{index}")(x)  # silence half the units in each training step
    # Ten class probabilities, in float32 even when the layers above compute in bfloat16 (a stable softmax).
    outputs = layers.Dense(10, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="dense")


def augmentation() -> keras.Sequential:
    """Digits written a little differently: small random rotations, zooms and shifts; off at inference. What moves
    into the picture is filled with black paper ("constant"), not with mirrored strokes."""
    return keras.Sequential([layers.RandomRotation(0.04, fill_mode="constant"), layers.RandomZoom(
        0.1, fill_mode="constant"), layers.RandomTranslation(0.1, 0.1, fill_mode="constant")], name="augmentation")


def one_cycle(peak: float, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate rises linearly to ``peak`` over the first 10% of the steps, then decays to 0 (cosine)."""
    warmup = max(1, steps // 10)
    return keras.optimizers.schedules.CosineDecay(0.0, max(1, steps - warmup), warmup_target=peak, warmup_steps=warmup)


def main(argv=None, extra_callbacks=()) -> int:
    args = parse_args(argv)
    (x_train, y_train), (x_test, y_test) = load_data(args.data)
    if (args.train_size or 0) > len(x_train):
        fail(f"--train-size {args.train_size} is larger than the {len(x_train)} training images; use at most that")
    x_train, y_train = x_train[: args.train_size, ..., None], y_train[: args.train_size]  # add a channel axis
    held_out = max(1, round(len(x_train) * args.val_split)) if args.val_split else 0  # the last images validate
    if held_out >= len(x_train):
        fail(f"only {len(x_train)} training images: too few to hold out a validation set; use a larger --train-size")
    cut = len(x_train) - held_out
    x_train, y_train, x_val, y_val = x_train[:cut], y_train[:cut], x_train[cut:], y_train[cut:]
    print(f"training on {len(x_train)} images, validating on {held_out}", flush=True)

    # Where to compute (tf.distribute: one device, or mirrored on several), in which precision, from which seed.
    strategy = tf.distribute.get_strategy()  # the default: one device
    if args.distribute == "mirrored":  # a copy of the network on every device; each step's batch split between them
        if not tf.config.list_physical_devices("GPU"):  # no GPU: two logical CPU devices, to try it out
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    precision = args.precision if args.precision != "auto" else "mixed_bfloat16" if amx_bf16() else "float32"
    keras.mixed_precision.set_global_policy(precision)  # bfloat16 only where it was measured faster: docs/
    keras.utils.set_random_seed(args.seed)  # Python's, NumPy's and TensorFlow's: weights, shuffling, dropout
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    replicas = strategy.num_replicas_in_sync
    print(f"precision {precision}, global batch {args.batch_size * replicas} ({replicas} replica(s)), seed {args.seed}")

    # 2-3. The network, and how it learns: Adam, a one-cycle learning rate and cross-entropy, like the CNN.
    with strategy.scope():  # its weights live on one device, or mirrored on several
        model = build_model(args.augment)
        steps = math.ceil(len(x_train) / (args.batch_size * replicas)) * args.epochs
        model.compile(optimizer=keras.optimizers.Adam(one_cycle(args.learning_rate, steps)),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    backup = prepare_run("dense", model, args)  # safety checks before training: see the bottom of the file

    # 4. Train with Keras' fit loop and its callbacks: each epoch's seconds, the network as it stands and a CSV row
    #    (to watch the run as it goes), a backup after every epoch (--resume goes on from it), a stop if the loss
    #    becomes NaN, TensorBoard logs if asked for.
    started = {}
    callbacks = [
        keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: started.update(at=time.perf_counter()),
            on_epoch_end=lambda epoch, logs: logs.update(epoch_seconds=time.perf_counter() - started["at"])),
        keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: save_epoch(model, backup, epoch + 1)),
        keras.callbacks.CSVLogger(os.path.join(backup, "history.csv"), append=True),  # after it, before the backup
        Backup(os.path.join(backup, "state"), double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.TerminateOnNaN(),
        *([keras.callbacks.TensorBoard(args.tensorboard)] if args.tensorboard else []),
        stop_between_steps(args.epochs),  # last: Ctrl-C takes effect between two steps, and after an epoch's backup
        *extra_callbacks,
    ]
    model.fit(x_train, y_train, batch_size=args.batch_size * replicas, epochs=args.epochs, callbacks=callbacks,
              validation_data=(x_val, y_val) if held_out else None, verbose=1 if sys.stdout.isatty() else 2)

    # 5. Test, once, on the 10,000 test images that no step of training has seen.
    test_loss, test_accuracy = model.evaluate(x_test[..., None], y_test, batch_size=2048, verbose=0)

    # 6. Save the model and its records: all of them, or (on any failure) none.
    with open(os.path.join(backup, "history.csv"), newline="") as file:  # after --resume, an epoch's last row wins
        rows = {row["epoch"]: {k: float(v) for k, v in row.items() if v != "NA"} for row in csv.DictReader(file)}
    history = sorted(rows.values(), key=lambda row: row["epoch"])
    if len(history) < args.epochs or not all(math.isfinite(row["loss"]) for row in history):
        fail(f"training diverged (the loss is not a number) after {len(history)} epochs; try a lower --learning-rate")
    record = {"name": "dense", **vars(args), "precision": precision, "test_accuracy": test_accuracy,
              "test_loss": test_loss, "test_errors": round((1 - test_accuracy) * len(x_test)),
              "test_images": len(x_test), "parameters": model.count_params(), "train_images": len(x_train),
              "validation_images": held_out, "training_seconds": sum(row["epoch_seconds"] for row in history),
              "global_batch_size": args.batch_size * replicas, "replicas": replicas, "environment": environment()}
    path = os.path.join(args.models_dir, "dense.keras")
    save_all({path: model, os.path.join(args.results_dir, "dense_history.json"): {"name": "dense", "epochs": history},
              os.path.join(args.results_dir, "dense_run.json"): record}, os.path.join(args.results_dir, "runs.jsonl"))
    shutil.rmtree(backup, ignore_errors=True)
    print(f"dense: test accuracy {test_accuracy:.2%} ({record['test_errors']} errors / {len(x_test):,}), "
          f"{record['parameters']:,} parameters, trained {record['training_seconds']:.1f} s -> {path}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# Safety: what keeps a run from losing work (Ctrl-C, kill -9, a full disk, two runs at once). Nothing here changes
# what the network learns: a learner can skip it.
# ---------------------------------------------------------------------------------------------------------------------
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the docstring's line breaks and shows every flag's default."""


def fail(message: str):
    raise SystemExit(f"error: {message}")  # one line on stderr and exit code 1; `finally` blocks still clean up


def prepare_run(name: str, model: keras.Model, args: argparse.Namespace) -> str:
    """Before training: writable folders with room for what the run writes, one run per models folder, and the
    backup folder (emptied, or with --resume, left by an interrupted run with the same flags). Returns the latter."""
    folders = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in ("--models-dir", "--results-dir")}
    folders.update({"--tensorboard": args.tensorboard} if args.tensorboard else {})
    for flag, folder in folders.items():
        try:
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as error:
            fail(f"cannot write to the folder {folder!r}: {error.strerror}; choose another with {flag}")
    # The models folder holds two backups and the new model beside the old (weights and Adam's moments, float32),
    # and two epochs' networks while one replaces the other (weights alone).
    params = model.count_params()
    needs = {"--models-dir": 3 * (12 * params + 2**18) + 2 * (4 * params + 2**18), "--results-dir": 2**20,
             "--tensorboard": 2**22}
    for flag, folder in folders.items():  # folders on one disk share its free space
        total = sum(needs[f] for f, other in folders.items() if os.stat(other).st_dev == os.stat(folder).st_dev)
        if (free := shutil.disk_usage(folder).free) < total:
            fail(f"not enough disk space: {folder} has {free / 2**20:,.1f} MiB free, but this run writes about "
                 f"{total / 2**20:,.1f} MiB there; free some space or choose another {flag}")
    STOP["lock"] = hold_lock(os.path.join(args.models_dir, f".{name}.lock"), f"training run of {name}")
    backup, config = os.path.join(args.models_dir, f".resume-{name}"), {**vars(args), "resume": True}
    if args.resume and not os.path.isfile(os.path.join(backup, "config.json")):
        fail(f"nothing to resume in {backup}; run the command without --resume")
    if args.resume:  # the saved optimizer state only means something with the same flags
        with open(os.path.join(backup, "config.json")) as file:
            saved = json.load(file)
        if changed := [key for key, value in config.items() if saved.get(key) != value and key != "tensorboard"]:
            fail("--resume needs the same flags as the interrupted run; these differ: "
                 + ", ".join(f"--{key.replace('_', '-')}" for key in changed))
    else:
        shutil.rmtree(backup, ignore_errors=True)
        os.makedirs(backup)
        with open(os.path.join(backup, "config.json"), "w") as file:
            json.dump(config, file)
    return backup


def hold_lock(path: str, what: str):
    """An OS lock on a file, held until the process ends: the OS drops it then, however the process ends (kill -9
    too), so it never goes stale. It must still be the file at ``path``: the run before may have just removed it."""
    while True:
        lock = open(path, "a+")  # noqa: SIM115 - held open until the process ends
        try:
            try:
                import fcntl  # Linux, macOS

                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # Windows: lock a byte past the PID, so that another run can still read it
                import msvcrt

                lock.seek(1 << 20)
                msvcrt.locking(lock.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            time.sleep(0.1)  # the run that holds the lock writes its PID just after it takes it
            lock.seek(0)
            fail(f"another {what} (PID {lock.read().strip() or 'unknown'}) is writing to {os.path.dirname(path)}; "
                 "wait for it to finish, or give this run another --models-dir")
        if os.path.exists(path) and os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            return lock
        lock.close()


def amx_bf16() -> bool:
    """A CPU with AMX-BF16 units (recent Xeons; Linux tells) and no GPU: the one place bfloat16 was faster."""
    return "amx_bf16" in cpu_info() and not tf.config.list_physical_devices("GPU")


def cpu_info() -> str:
    if not os.path.isfile("/proc/cpuinfo"):  # not Linux
        return platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as file:
        return file.read()


def environment() -> dict:
    """What produced a record: the versions, the CPU, the GPU."""
    cpu = next((line.split(":")[1].strip() for line in cpu_info().splitlines() if line.startswith("model name")), None)
    gpus = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__, "numpy":
            np.__version__, "platform": platform.platform(), "cpu": f"{cpu or cpu_info()}, {os.cpu_count()} cores",
            "gpu": ", ".join(gpus) or "none"}


class Backup(keras.callbacks.BackupAndRestore):
    """If the only checkpoint was cut off while it was written (kill -9 in the first save), start over, saying so."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except OSError:
            print("the backup was cut off while it was being written (killed mid-save?): starting over", flush=True)
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def save_all(files: dict, log: str) -> None:
    """The model and its records, all or nothing: each is written to a temp file beside its target; only when all
    are written and the run-log line is appended do they replace the old ones. Ctrl-C or a full disk changes none."""
    temps = {path: os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
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
        with open(log, "ab") as file:  # one write per line: whole lines, even when two runs end together
            size = file.seek(0, os.SEEK_END)
            try:
                file.write((json.dumps(list(files.values())[-1]) + "\n").encode())
                file.flush()
            except OSError:
                file.truncate(size)  # a full disk mid-line: cut the half line off again
                raise
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            if os.path.exists(temp):
                os.remove(temp)


def save_epoch(model: keras.Model, folder: str, epoch: int) -> None:
    """The network as it stands after an epoch, for watching a run while it trains: ``epoch-K.keras`` in the backup
    folder, written beside and then renamed, so that a reader finds a whole file or none, never half of one. Without
    the optimizer's state (the backup has it): a third of the size. The epoch before's file goes."""
    view = keras.Model(model.inputs, model.outputs, name=model.name)  # the same layers and weights, no optimizer
    temp = os.path.join(folder, f".tmp-epoch-{epoch}.keras")
    try:
        view.save(temp)
        os.replace(temp, os.path.join(folder, f"epoch-{epoch}.keras"))
    finally:  # a full disk mid-save leaves no half file behind
        if os.path.exists(temp):
            os.remove(temp)
    with contextlib.suppress(OSError):  # none (the first epoch), or open in a reader on Windows: the folder goes later
        os.remove(os.path.join(folder, f"epoch-{epoch - 1}.keras"))


# Ctrl-C, SIGTERM and SIGHUP. While fit() runs, a signal is only noted, and raised between two steps: raised where it
# lands, inside TensorFlow's own code, it can corrupt TensorFlow. The line printed on a stop is made from STOP too.
STOP = {"signum": 0, "fitting": False, "epoch": 0, "epochs": 0, "saved": 0, "lock": None}


def on_signal(signum, frame):
    STOP["signum"] = signum
    if not STOP["fitting"]:
        raise KeyboardInterrupt


def stop_if_asked(*args, **kwargs):
    if STOP["signum"]:
        raise KeyboardInterrupt


def stop_between_steps(epochs: int) -> keras.callbacks.Callback:
    """The last callback: where training stands (an epoch counts as saved after its backup), and the stop itself."""
    STOP["epochs"] = epochs
    return keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: STOP.update(fitting=True),
        on_epoch_begin=lambda epoch, logs: STOP.update(epoch=epoch + 1, saved=STOP["saved"] or epoch),
        on_epoch_end=lambda epoch, logs: stop_if_asked(STOP.update(saved=epoch + 1)),
        on_train_batch_end=stop_if_asked, on_test_batch_end=stop_if_asked,
        on_train_end=lambda logs: STOP.update(fitting=False))


def run(main) -> int:
    """The entry point: every way a run can end is one line and an exit code, never a traceback."""
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s
               and signal.getsignal(s) is not signal.SIG_IGN]  # what nohup or `&` ignore stays ignored
    for signum in signals:
        signal.signal(signum, on_signal)
    try:
        code = main()
    except KeyboardInterrupt:
        code, epoch, saved = 128 + (STOP["signum"] or signal.SIGINT), STOP["epoch"], STOP["saved"]
        what = "interrupted" if code == 130 else f"stopped ({signal.Signals(code - 128).name})"
        where = f" {'in' if saved < epoch else 'after'} epoch {epoch} of {STOP['epochs']}" if epoch else ""
        how = (f"run the same command with --resume to go on from epoch {saved + 1}" if saved else
               "no epoch was backed up yet: run the same command again" if epoch else "run the same command again")
        print(f"\n{what}{where}: nothing was half-written; {how}", file=sys.stderr)
    except OSError as error:  # a full disk, a quota, a read-only folder (h5py puts the errno in its text)
        number = errno.ENOSPC if "errno = 28," in str(error) else error.errno
        reason = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its disk quota", errno.EROFS: "is read-only"}
        where = os.path.dirname(error.filename) if error.filename else "one of the output folders"
        code = print(f"error: {where} {reason[number]} ({os.strerror(number)}); nothing half-written was left: free "
                     "some space, or choose another folder, and run the same command again" if number in reason else
                     f"error: {error}", file=sys.stderr) or 1
    finally:
        if STOP["lock"]:  # remove the lock file, then let go of it
            os.remove(STOP["lock"].name)
            STOP["lock"].close()
    for signum in signals:  # TensorFlow takes a moment to shut down: a stop now changes nothing
        signal.signal(signum, lambda signum, frame: os._exit(code))
    return code


if __name__ == "__main__":
    sys.exit(run(main))
