"""The training pipeline shared by train_cnn.py and train_dense.py.

load → validate → build → fit → evaluate once on the test set → save atomically → record.
Each step prints what it does, so a run reads like the Keras tutorials it extends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnistlab import UserError, cli, data, records

BuildFn = Callable[[bool], keras.Model]  # build(augment) -> uncompiled model
WARMUP_FRACTION = 0.1  # share of all steps spent ramping the learning rate up from 0
EVAL_BATCH = 2048  # evaluation has no gradients: large batches are fastest
# The flags a resumed run must share with the interrupted one, or the saved optimizer state means nothing.
RESUME_KEYS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "seed",
    "train_size",
    "val_split",
    "augment",
    "precision",
    "data",
    "preset",
)


# ---------------------------------------------------------------------------------------------------------------
# Set-up: seeds, precision, devices
# ---------------------------------------------------------------------------------------------------------------
def cpu_has_amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def choose_precision(requested: str) -> str:
    """'auto' picks bfloat16 compute only where it was measured faster: CPUs with AMX-BF16 units, no GPU."""
    if requested != "auto":
        return requested
    if not tf.config.list_physical_devices("GPU") and cpu_has_amx_bf16():
        return "mixed_bfloat16"
    return "float32"


def make_strategy(args: argparse.Namespace) -> tf.distribute.Strategy:
    """The tf.distribute strategy for --distribute; the default strategy is plain single-device training."""
    if args.distribute == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if args.distribute == "multiworker":
        try:
            cluster = json.loads(os.environ["TF_CONFIG"])
            cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]  # noqa: B018 - shape check
        except (KeyError, ValueError, TypeError):
            raise UserError(
                "--distribute multiworker needs TF_CONFIG set to JSON with 'cluster' and 'task' on every worker; "
                "see the README section on several machines"
            ) from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def patch_keras_multiworker_logs() -> None:
    """Work around Keras 3.15 averaging each step's scalar logs over "axis 0" across workers, which fails.

    Under MultiWorkerMirroredStrategy the logs (loss, accuracy) are averaged across workers with ``axis=None``
    instead; every other strategy and reduction goes to Keras unchanged. Gradients are all-reduced by the
    strategy itself and are not affected.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: PLC0415 - private, hence this shim

    original = tf_trainer.reduce_per_replica
    if getattr(original, "patched_for_multiworker", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.patched_for_multiworker = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Only one process writes files: the chief (or worker 0 when the cluster names no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def configure(args: argparse.Namespace) -> tuple[tf.distribute.Strategy, str]:
    """Seed everything, pick precision and devices. Returns (strategy, precision actually used)."""
    strategy = make_strategy(args)  # first: logical devices must be set before TensorFlow touches the CPU
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    precision = choose_precision(args.precision)
    keras.mixed_precision.set_global_policy(precision)
    return strategy, precision


# ---------------------------------------------------------------------------------------------------------------
# Data pipeline and schedule
# ---------------------------------------------------------------------------------------------------------------
def split_validation(
    dataset: data.Dataset, val_split: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out the *last* ``val_split`` of the training images for validation (like Keras' validation_split).

    ``val_split`` 0 holds out nothing (the validation arrays are empty): every image is trained on.
    """
    count = len(dataset.x_train)
    held_out = max(1, round(count * val_split)) if val_split > 0 else 0
    if held_out >= count:
        raise UserError(
            f"only {count} training images: too few to hold out a validation set; use a larger --train-size"
        )
    cut = count - held_out
    return (dataset.x_train[:cut], dataset.y_train[:cut]), (dataset.x_train[cut:], dataset.y_train[cut:])


def pipeline(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """A tf.data pipeline over in-memory tensors: reshuffled every epoch, batched, cast to float, prefetched.

    Shuffling *indices* and gathering whole batches costs one op per batch instead of one per image. Measured
    here (default CNN, bf16, batch 384) it is as fast as feeding NumPy arrays (3.2-3.3 s vs 3.0-3.2 s per
    epoch, within the machine's noise) and steadier than shuffling image by image (3.4-5.0 s); it is a
    tf.data pipeline because tf.distribute shards those across replicas and workers.
    """
    images = tf.constant(images[..., None])
    labels = tf.constant(labels)
    indices = tf.data.Dataset.range(len(labels))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    stream = indices.batch(batch_size).map(
        lambda batch: (tf.cast(tf.gather(images, batch), tf.float32), tf.gather(labels, batch)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return stream.with_options(options).prefetch(tf.data.AUTOTUNE)


def learning_rate_schedule(peak: float, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to ``peak`` over the first 10% of steps, then cosine decay to 0 ("one cycle")."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total_steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (training + validation of that epoch) to the logs the other callbacks see."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.started


class TestAccuracyTracker(keras.callbacks.Callback):
    """For benchmarks only: test accuracy after every epoch, to find *when* a run first reaches a target.

    Placed after :class:`EpochTimer`, so its evaluation time is not counted in ``epoch_seconds``; the time it
    takes is kept in ``seconds`` so a benchmark can subtract it from the process wall-clock. It predicts with its
    own compiled function rather than ``model.evaluate``, which would re-trace the model's test function
    (shared with validation) and slow the epochs it is meant to measure. Nothing is ever decided on these
    numbers (no early stopping, no model selection): the test set is not used for tuning.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.images, self.labels = images, labels
        self.accuracies: list[float] = []
        self.epoch_seconds: list[float] = []
        self.seconds = 0.0
        self.predict = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from mnistlab.inference import predict_in_batches, predictor  # noqa: PLC0415

        started = time.perf_counter()
        self.predict = self.predict or predictor(self.model)
        predicted = predict_in_batches(self.predict, self.images, EVAL_BATCH).argmax(axis=1)
        accuracy = float((predicted == self.labels).mean())
        self.seconds += time.perf_counter() - started
        self.accuracies.append(accuracy)
        if logs is not None:
            self.epoch_seconds.append(float(logs.get("epoch_seconds", 0.0)))
            logs["test_accuracy"] = accuracy


def read_history(csv_path: Path) -> list[dict[str, float]]:
    """Per-epoch rows from CSVLogger's file; after a resume an epoch may appear twice: keep its last row.

    Without a validation set CSVLogger still writes ``val_*`` columns, filled with "NA": those are left out.
    """
    if not csv_path.is_file():
        return []
    rows: dict[int, dict[str, float]] = {}
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",") if lines else []
    for line in lines[1:]:
        values = line.split(",")
        if len(values) == len(header):
            row = {key: float(value) for key, value in zip(header, values, strict=True) if value != "NA"}
            rows[int(row["epoch"])] = row
    return [rows[epoch] for epoch in sorted(rows)]


# ---------------------------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------------------------
def run(name: str, args: argparse.Namespace, build: BuildFn) -> dict[str, Any]:
    """Train ``build(args.augment)`` on MNIST and save ``<models-dir>/<name>.keras`` plus its JSON records."""
    models_dir = cli.writable_dir(args.models_dir, "models dir")
    results_dir = cli.writable_dir(args.results_dir, "results dir")
    model_path = models_dir / f"{name}.keras"
    strategy, precision = configure(args)  # first: devices must be set up before TensorFlow uses them
    chief = is_chief(strategy)
    # Each worker of a multi-worker run keeps its own backup; the chief's sits beside the model.
    backup_dir = models_dir / (
        f".resume-{name}" if chief else f".resume-{name}-worker{strategy.cluster_resolver.task_id}"
    )
    resume_config = {key: getattr(args, key, None) for key in RESUME_KEYS}
    prepare_backup(backup_dir, resume_config, args.resume)

    # 1. Data: real MNIST, validated; a validation slice held out of the training images.
    dataset = data.load(args.data).first(args.train_size)
    (x_fit, y_fit), (x_val, y_val) = split_validation(dataset, args.val_split)

    # 2. Replicas, batch and schedule; then the model, built inside the strategy's scope.
    replicas = strategy.num_replicas_in_sync
    global_batch = args.batch_size * replicas
    steps_per_epoch = math.ceil(len(x_fit) / global_batch)
    with strategy.scope():
        model = build(args.augment)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate_schedule(args.learning_rate, steps_per_epoch * args.epochs)),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
    if args.distribute == "multiworker":
        # Keras 3.15 passes the whole (x, y) batch to strategy.reduce() while building a model made in a
        # MultiWorkerMirroredStrategy scope, which that strategy cannot do (keras-team/keras#20585). Forgetting
        # the scope here defers the build to the first traced step; fit() runs inside the scope below.
        model._distribute_strategy = None
        patch_keras_multiworker_logs()
    model.summary()
    print(
        f"training on {len(x_fit)} images, validating on {len(x_val)}; {args.epochs} epochs of {steps_per_epoch} "
        f"steps, global batch {global_batch} ({replicas} replica{'s' if replicas > 1 else ''}), "
        f"precision {precision}, peak learning rate {args.learning_rate}",
        flush=True,
    )

    # 3. Train, with a backup after every epoch so that an interrupted run can --resume.
    backup_dir.mkdir(parents=True, exist_ok=True)
    (backup_dir / "config.json").write_text(json.dumps(resume_config))
    history_csv = backup_dir / "history.csv"
    # Built only when asked for: the benchmark's per-epoch test accuracy (the predictor takes raw uint8 pixels).
    tracker = TestAccuracyTracker(dataset.x_test, dataset.y_test) if args.track_test else None
    callbacks = [
        EpochTimer(),
        *([tracker] if tracker else []),
        keras.callbacks.CSVLogger(str(history_csv), append=True),  # before the backup: a row is never lost
        keras.callbacks.BackupAndRestore(str(backup_dir / "state"), delete_checkpoint=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    started = time.perf_counter()
    with strategy.scope():
        model.fit(
            pipeline(x_fit, y_fit, global_batch, shuffle_seed=args.seed),
            validation_data=pipeline(x_val, y_val, EVAL_BATCH) if len(x_val) else None,
            epochs=args.epochs,
            shuffle=False,  # the pipeline reshuffles every epoch itself
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,  # a live progress bar in a terminal, one line per epoch in logs
        )
    fit_seconds = time.perf_counter() - started
    history = read_history(history_csv)
    if len(history) < args.epochs or not all(math.isfinite(row["loss"]) for row in history):
        raise UserError(
            f"training diverged (loss is not a number) after {len(history)} epochs; try a lower --learning-rate"
        )

    # 4. Evaluate once on the 10,000 test images, then save model and records atomically.
    test_loss, test_accuracy = evaluate(model, dataset.x_test, dataset.y_test)
    record = {
        "name": name,
        "model_path": str(model_path),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "test_errors": int(round((1 - test_accuracy) * len(dataset.x_test))),
        "test_images": len(dataset.x_test),
        "parameters": int(model.count_params()),
        "training_seconds": sum(row["epoch_seconds"] for row in history),
        "fit_seconds_this_process": fit_seconds,
        "test_eval_seconds": tracker.seconds if tracker else 0.0,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "global_batch_size": global_batch,
        "replicas": replicas,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "train_images": len(x_fit),
        "validation_images": len(x_val),
        "augment": args.augment,
        "precision": precision,
        "deterministic": args.deterministic,
        "distribute": args.distribute,
        "data_source": dataset.source,
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": records.environment(),
    }
    if chief:
        records.save_model(model, model_path)
        records.write_json(results_dir / f"{name}_history.json", {"name": name, "epochs": history})
        records.write_json(results_dir / f"{name}_run.json", record)
        records.append_run_log(results_dir, record)
    shutil.rmtree(backup_dir, ignore_errors=True)
    print(
        f"{name}: test accuracy {test_accuracy:.2%} ({record['test_errors']} errors / {len(dataset.x_test):,}), "
        f"{record['parameters']:,} parameters, trained {record['training_seconds']:.1f} s "
        f"({args.epochs} epochs) -> {model_path if chief else 'not saved (not the chief)'}",
        flush=True,
    )
    return record


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Test loss and accuracy over *all* ``images`` on this process — no collectives, so every worker of a
    multi-worker run (where evaluate() would shard the test set) sees the same full answer."""
    from mnistlab.inference import predict_in_batches, predictor  # noqa: PLC0415

    probabilities = predict_in_batches(predictor(model), images, EVAL_BATCH).astype(np.float64)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())
    return loss, float((probabilities.argmax(axis=1) == labels).mean())


def prepare_backup(backup_dir: Path, config: dict[str, Any], resume: bool) -> None:
    """Without --resume a run starts fresh; with it, there must be a backup made by the same flags."""
    if not resume:
        shutil.rmtree(backup_dir, ignore_errors=True)
        return
    saved = backup_dir / "config.json"
    if not saved.is_file():
        raise UserError(f"nothing to resume in {backup_dir}; run the command without --resume")
    previous = json.loads(saved.read_text())
    changed = [key for key in RESUME_KEYS if previous.get(key) != config[key]]
    if changed:
        flags = ", ".join("--" + key.replace("_", "-") for key in changed)
        raise UserError(f"--resume needs the same flags as the interrupted run; these differ: {flags}")


def quick_fit(
    model: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 1,
) -> dict[str, list[float]]:
    """Compile and fit in-process with the same pipeline and schedule as the scripts; return the history.

    For the experiments, which train many small models: no files, no backups, no progress bar.
    """
    steps = math.ceil(len(train[0]) / batch_size) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate_schedule(learning_rate, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        pipeline(*train, batch_size, shuffle_seed=seed),
        validation_data=pipeline(*validation, EVAL_BATCH) if validation is not None else None,
        epochs=epochs,
        shuffle=False,
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}
