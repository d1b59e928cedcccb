"""Training plumbing for train_cnn.py and train_dense.py, which keep the machine learning in plain sight.

The scripts build, compile, fit and evaluate their networks themselves; this module lends them the rest:
:class:`Run` (seeds, precision, devices, callbacks, --resume, atomic saves and records), the tf.data input
pipeline, the one-cycle learning-rate schedule, and a test-set evaluation that every worker can trust.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnistlab import UserError, cli, data, distribute, records
from mnistlab.callbacks import Backup, EpochTimer, StopOnSignal, TestAccuracyTracker

import keras
import numpy as np
import tensorflow as tf

WARMUP_FRACTION = 0.1  # share of all steps spent ramping the learning rate up from 0
EVAL_BATCH = 2048  # evaluation has no gradients: large batches are fastest
# What a run writes besides its weights (free-space check): a .keras archive's config, the records, TensorBoard.
MODEL_FILE_OVERHEAD = 256 * 1024
RECORDS_BYTES = 1024 * 1024
TENSORBOARD_BYTES = 4 * 1024 * 1024
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


# ---------------------------------------------------------------------------------------------------------------
# Data pipeline and schedule
# ---------------------------------------------------------------------------------------------------------------
def pipeline(
    images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    """A tf.data pipeline over in-memory tensors: reshuffled every epoch, batched, cast to float, prefetched.

    Shuffling *indices* and gathering whole batches costs one op per batch instead of one per image: as fast as
    feeding NumPy arrays, and steadier than shuffling image by image (measured: docs/performance.md). It is a
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


def one_cycle(peak: float, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up to ``peak`` over the first 10% of steps, then cosine decay to 0 ("one cycle")."""
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(1, total_steps - warmup), warmup_target=peak, warmup_steps=warmup
    )


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
# One run's plumbing, behind a few calls whose names say what they do
# ---------------------------------------------------------------------------------------------------------------
class Run:
    """Everything around ``model.fit`` that a training script needs but a reader need not study.

    Created first thing, so that a problem shows in the first second rather than after training: it checks the
    output folders and ``--resume``, seeds every random generator (``keras.utils.set_random_seed``), picks the
    precision and sets up the ``tf.distribute`` strategy (devices must be configured before TensorFlow uses them).
    """

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.models_dir = cli.writable_dir(args.models_dir, "models dir")
        self.results_dir = cli.writable_dir(args.results_dir, "results dir")
        self.model_path = self.models_dir / f"{name}.keras"
        self.strategy = distribute.make_strategy(args)  # first: logical devices are fixed once TensorFlow starts
        keras.utils.set_random_seed(args.seed)
        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.precision = choose_precision(args.precision)
        keras.mixed_precision.set_global_policy(self.precision)
        self.chief = distribute.is_chief(self.strategy)
        # Each worker of a multi-worker run keeps its own backup; the chief's sits beside the model.
        worker = "" if self.chief else f"-worker{distribute.worker_id(self.strategy)}"
        # One run of this network per models folder: a second one refuses before it touches the first's files.
        records.lock_folder(self.models_dir, f"{name}{worker}", what=f"training run of {name}")
        self.backup_dir = self.models_dir / f".resume-{name}{worker}"
        self.resume_config = {key: getattr(args, key, None) for key in RESUME_KEYS}
        prepare_backup(self.backup_dir, self.resume_config, args.resume)
        self.replicas = self.strategy.num_replicas_in_sync
        self.global_batch = args.batch_size * self.replicas
        self.timer = EpochTimer()
        self.backup: Backup | None = None
        self.tracker: TestAccuracyTracker | None = None
        cli.progress = self.progress  # what Ctrl-C or SIGTERM reports
        print(
            f"precision {self.precision}, global batch {self.global_batch} "
            f"({self.replicas} replica{'s' if self.replicas > 1 else ''}), peak learning rate {args.learning_rate}, "
            f"seed {args.seed}",
            flush=True,
        )

    def progress(self) -> tuple[str, str] | None:
        """Where training stands and how to go on, for the line printed when it is stopped; None before training.

        It goes by what is backed up, not by what has finished: a stop while an epoch's backup is being written
        resumes from the epoch before.
        """
        if self.timer.epoch is None or self.backup is None:
            return None
        if self.timer.finished > self.timer.epoch:  # between two epochs, or after the last one
            where = f"after epoch {self.timer.finished} of {self.args.epochs}"
        else:
            where = f"in epoch {self.timer.epoch + 1} of {self.args.epochs}"
        saved = self.backup.saved or 0
        if saved == 0:
            return where, "no epoch was backed up yet: run the same command again"
        return where, f"run the same command with --resume to go on from epoch {saved + 1}"

    def total_steps(self, train_images: int) -> int:
        """Optimizer steps in the whole run: what the learning-rate schedule spans."""
        return math.ceil(train_images / self.global_batch) * self.args.epochs

    def training_batches(self, images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
        """Training images as a tf.data pipeline: reshuffled every epoch (seeded), in global batches."""
        return pipeline(images, labels, self.global_batch, shuffle_seed=self.args.seed)

    def validation_batches(self, images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset | None:
        """Validation images in large batches (no gradients); None when --val-split 0 held none out."""
        return pipeline(images, labels, EVAL_BATCH) if len(images) else None

    def callbacks(self, model: keras.Model, dataset: data.Dataset) -> list[keras.callbacks.Callback]:
        """Keras callbacks: epoch timing, a CSV history, a backup after every epoch (for --resume), a stop on NaN,
        and TensorBoard logs with --tensorboard. Called just before fit(), which is when the multi-worker shim
        must act (mnistlab/distribute.py)."""
        distribute.defer_build(model, self.strategy)
        self.check_free_space(model)
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        (self.backup_dir / "config.json").write_text(json.dumps(self.resume_config))
        # Built only when asked for: the benchmark's per-epoch test accuracy (the predictor takes raw uint8 pixels).
        self.tracker = TestAccuracyTracker(dataset.x_test, dataset.y_test) if self.args.track_test else None
        self.backup = Backup(self.backup_dir / "state")
        callbacks = [
            self.timer,
            *([self.tracker] if self.tracker else []),
            keras.callbacks.CSVLogger(str(self.history_csv), append=True),  # before the backup: no row is lost
            self.backup,
            keras.callbacks.TerminateOnNaN(),
        ]
        if self.args.tensorboard and self.chief:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=self.args.tensorboard))
        return [*callbacks, StopOnSignal()]  # last: an epoch's stop comes after its backup

    def check_free_space(self, model: keras.Model) -> None:
        """Before training: is there room for what this run will write? Its sizes are known once the model is.

        The models folder holds, at the end, the new model's temp file beside the old model, and during training
        two backups; each is the weights plus Adam's two moments, in float32.
        """
        state_bytes = 3 * 4 * model.count_params() + MODEL_FILE_OVERHEAD
        needs = {self.models_dir: 3 * state_bytes, self.results_dir: RECORDS_BYTES}
        flags = {self.models_dir: "--models-dir", self.results_dir: "--results-dir"}
        if self.args.tensorboard and self.chief:
            tensorboard = cli.writable_dir(self.args.tensorboard, "tensorboard")
            needs[tensorboard], flags[tensorboard] = TENSORBOARD_BYTES, "--tensorboard"
        records.check_free_space(needs, flags)

    @property
    def history_csv(self) -> Path:
        return self.backup_dir / "history.csv"

    @property
    def verbose(self) -> int:
        """Keras' live progress bar in a terminal; one line per epoch in a log file or CI."""
        return 1 if sys.stdout.isatty() else 2

    def save(
        self, model: keras.Model, dataset: data.Dataset, *, train_images: int, test_loss: float, test_accuracy: float
    ) -> dict[str, Any]:
        """Save the model and its records atomically (chief only), drop the backup, print a one-line summary."""
        args = self.args
        history = read_history(self.history_csv)
        if len(history) < args.epochs or not all(math.isfinite(row["loss"]) for row in history):
            raise UserError(
                f"training diverged (loss is not a number) after {len(history)} epochs; try a lower --learning-rate"
            )
        record = {
            "name": self.name,
            "model_path": str(self.model_path),
            "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss),
            "test_errors": int(round((1 - test_accuracy) * len(dataset.x_test))),
            "test_images": len(dataset.x_test),
            "parameters": int(model.count_params()),
            "training_seconds": sum(row["epoch_seconds"] for row in history),
            "fit_seconds_this_process": self.timer.fit_seconds,
            "test_eval_seconds": self.tracker.seconds if self.tracker else 0.0,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "global_batch_size": self.global_batch,
            "replicas": self.replicas,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "train_images": train_images,
            "validation_images": len(dataset.x_train) - train_images,
            "augment": args.augment,
            "precision": self.precision,
            "deterministic": args.deterministic,
            "distribute": args.distribute,
            "data_source": dataset.source,
            "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "environment": records.environment(),
        }
        if self.chief:
            with records.AllOrNothing() as files:  # a failure part-way keeps the previous model and records
                files.save_model(model, self.model_path)
                files.write_json(self.results_dir / f"{self.name}_history.json", {"name": self.name, "epochs": history})
                files.write_json(self.results_dir / f"{self.name}_run.json", record)
                files.append_run_log(self.results_dir, record)
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        print(
            f"{self.name}: test accuracy {test_accuracy:.2%} ({record['test_errors']} errors / "
            f"{len(dataset.x_test):,}), {record['parameters']:,} parameters, trained "
            f"{record['training_seconds']:.1f} s ({args.epochs} epochs) -> "
            f"{self.model_path if self.chief else 'not saved (not the chief)'}",
            flush=True,
        )
        return record


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Test loss and accuracy over *all* ``images`` on this process — no collectives, so every worker of a
    multi-worker run (where evaluate() would shard the test set) sees the same full answer."""
    from mnistlab.inference import predict_in_batches, predictor

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
        optimizer=keras.optimizers.Adam(one_cycle(learning_rate, steps)),
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
