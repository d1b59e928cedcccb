"""Real training runs of both scripts on a slice of real MNIST: accuracy floors and the records they write."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import SMALL_EPOCHS, SMALL_TRAIN, data_flags, mnist_npz, moved, output_flags, run_script

import compare
import train_cnn
import train_dense

# Floors for 3 epochs on 6,000 real training images, checked on all 10,000 test images.
CNN_FLOOR = 0.95
DENSE_FLOOR = 0.90


def run_record(trained, name):
    return json.loads((trained["results"] / f"{name}_run.json").read_text())


@pytest.mark.parametrize(("name", "floor"), [("cnn", CNN_FLOOR), ("dense", DENSE_FLOOR)])
def test_short_real_training_reaches_floor(trained, name, floor):
    record = run_record(trained, name)
    assert record["test_accuracy"] >= floor, record["test_accuracy"]
    assert record["test_images"] == 10000
    assert record["test_errors"] == round((1 - record["test_accuracy"]) * 10000)


def test_cnn_beats_dense_on_the_same_budget(trained):
    assert run_record(trained, "cnn")["test_accuracy"] > run_record(trained, "dense")["test_accuracy"]


@pytest.mark.parametrize("name", ["cnn", "dense"])
def test_run_record_contents(trained, name):
    record = run_record(trained, name)
    assert record["epochs"] == SMALL_EPOCHS
    assert record["train_images"] + record["validation_images"] == SMALL_TRAIN
    assert record["validation_images"] == SMALL_TRAIN // 10
    assert record["parameters"] == keras.saving.load_model(trained["models"] / f"{name}.keras").count_params()
    assert record["training_seconds"] > 0 and record["seed"] == 1
    assert record["data"] == str(mnist_npz()) and record["precision"] == "float32"  # the default now
    assert (record["backend"], record["keras"]) == ("tensorflow", keras.__version__)  # TensorFlow: the default
    assert record["platform"] == platform.platform()  # the machine it ran on: this one
    assert record["test_loss"] > 0 and record["test_images"] == 10_000


@pytest.mark.parametrize("name", ["cnn", "dense"])
def test_history_has_every_epoch(trained, name):
    epochs = json.loads((trained["results"] / f"{name}_history.json").read_text())["epochs"]
    assert [row["epoch"] for row in epochs] == list(range(SMALL_EPOCHS))
    floor = CNN_FLOOR if name == "cnn" else DENSE_FLOOR
    for row in epochs:
        assert 0 < row["loss"] < 2.5 and 0 < row["val_loss"] < 1.0, row  # cross-entropy of 10 classes starts at 2.3
        assert 0.5 < row["accuracy"] <= 1 and floor - 0.1 < row["val_accuracy"] <= 1, row
    # EpochSeconds' column: one positive, finite number per epoch, and the record's training time is their sum
    # (how long an epoch takes is the benchmark's business, not a test's).
    seconds = [row["epoch_seconds"] for row in epochs]
    assert len(seconds) == SMALL_EPOCHS and all(math.isfinite(s) and s > 0 for s in seconds), seconds
    assert run_record(trained, name)["training_seconds"] == pytest.approx(sum(seconds), rel=1e-9)
    assert epochs[-1]["val_accuracy"] >= floor - 0.02  # 600 validation images: a noisier floor than the test set's
    assert epochs[-1]["loss"] < epochs[0]["loss"]


def test_summary_line_and_run_log(trained):
    """Each script's last line is its run in one line, every number the record's (the parameters pinned: 35,338 and
    669,706); runs.jsonl holds each run's whole record, one line each, in the order they ran."""
    records = [run_record(trained, name) for name in ("cnn", "dense")]
    for record, parameters in zip(records, (35_338, 669_706), strict=True):
        name = record["name"]
        out = trained["outputs"][f"train_{name}.py"].stdout
        # The line before training: the images, the backend and the precision (summary() follows it).
        before = f"training on {SMALL_TRAIN * 9 // 10} images, validating on {SMALL_TRAIN // 10}; backend tensorflow, "
        assert f"\n{before}precision float32, seed 1\n" in f"\n{out}", out[:2000]
        assert record["parameters"] == parameters and record["test_images"] == 10_000, record
        assert out.strip().splitlines()[-1] == (
            f"{name}: test accuracy {record['test_accuracy']:.2%} ({record['test_errors']} errors / 10,000), "
            f"{parameters:,} parameters, trained {record['training_seconds']:.1f} s -> "
            f"{trained['models'] / f'{name}.keras'}"
        ), out[-1000:]
    lines = (trained["results"] / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records


def test_no_temp_or_backup_files_left(trained):
    leftovers = [p.name for p in trained["models"].iterdir()] + [p.name for p in trained["results"].iterdir()]
    assert sorted(leftovers) == sorted(
        [
            "cnn.keras",
            "dense.keras",
            "cnn_run.json",
            "cnn_history.json",
            "dense_run.json",
            "dense_history.json",
            "runs.jsonl",
        ]
    )


@pytest.mark.parametrize(("name", "floor"), [("cnn", CNN_FLOOR), ("dense", DENSE_FLOOR)])
def test_saved_model_is_self_contained_on_raw_pixels(trained, mnist, name, floor):
    """Anyone can load the .keras file and call it on raw 0-255 uint8 images, with or without the channel axis (the
    same probabilities): the scaling to 0-1 is the model's first layer, so pixels scaled beforehand are wrong input."""
    model = keras.saving.load_model(trained["models"] / f"{name}.keras", safe_mode=True)
    images, labels = mnist.x_test[:500], mnist.y_test[:500]
    assert images.dtype == np.uint8
    # Called directly: Keras' predict() traces its function for one input rank and fails on the other afterwards.
    flat, channel = np.asarray(model(images)), np.asarray(model(images[..., None]))
    np.testing.assert_allclose(flat, channel, rtol=0, atol=1e-6)
    assert (flat.argmax(axis=1) == labels).mean() >= floor - 0.02
    rescale = model.layers[1]  # right after the input: 0-255 in, 0-1 out
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.scale == pytest.approx(1 / 255), model.layers[:3]
    assert (rescale.offset, model.input_shape) == (0.0, (None, 28, 28, 1))
    prescaled = np.asarray(model(images.astype(np.float32) / 255))
    assert np.abs(prescaled - flat).max() > 0.5  # scaled twice: near-black images, other answers
    assert (prescaled.argmax(axis=1) == labels).mean() < 0.5


def test_val_split_zero_trains_on_every_image_and_plots_training_accuracy(tmp_path):
    result = run_script(
        "train_dense.py",
        "--val-split",
        "0",
        "--train-size",
        "2000",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        *output_flags(tmp_path),
        *data_flags(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "dense_run.json").read_text())
    assert (record["train_images"], record["validation_images"]) == (2000, 0)
    history = json.loads((tmp_path / "results" / "dense_history.json").read_text())["epochs"]
    assert len(history) == 1 and "val_accuracy" not in history[0] and history[0]["accuracy"] > 0.5

    # compare.py's learning-curve panels fall back to training accuracy for such a run, and say so.
    row = {key: record[key] for key in ("test_accuracy", "training_seconds", "parameters")}
    figure = compare.figure({"dense": {**row, "images_per_second": 1000.0}}, {"dense": history})
    legend = [text.get_text() for text in figure.axes[4].get_legend().get_texts()]
    assert legend == ["Dense (training accuracy)"]
    assert figure.axes[4].get_title() == "Accuracy per epoch"  # not "Validation": this curve is training accuracy


def test_presets_set_defaults_that_flags_still_override():
    def knobs(args):
        return (args.epochs, args.batch_size, args.learning_rate, args.val_split, args.augment,
                args.label_smoothing, args.average_weights, args.shifted_views)  # fmt: skip

    fast, best = train_cnn.parse_args([]), train_cnn.parse_args(["--preset", "best"])
    assert knobs(fast) == (5, 384, 6e-3, 0.1, False, 0.0, False, False)
    assert knobs(best) == (20, 256, 3e-3, 0.0, True, 0.1, True, True)
    overridden = train_cnn.parse_args(
        ["--preset", "best", "--val-split", "0.1", "--epochs", "2", "--label-smoothing", "0",
         "--no-average-weights", "--no-shifted-views"]
    )  # fmt: skip
    assert knobs(overridden) == (2, 256, 3e-3, 0.1, True, 0.0, False, False)


def test_tensorboard_flag_writes_event_files(trained):
    """train_dense.py --tensorboard DIR (in the shared fixture) logs every epoch's loss and accuracy, for training
    and for validation, and they agree with the script's own history."""
    import tensorflow as tf

    history = json.loads((trained["results"] / "dense_history.json").read_text())["epochs"]
    for split, prefix in (("train", ""), ("validation", "val_")):
        logged: dict[str, dict[int, float]] = {}
        for path in (trained["tensorboard"] / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in (v for v in event.summary.value if v.tag.startswith("epoch_")):
                    logged.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
        for metric in ("loss", "accuracy"):
            assert sorted(logged[f"epoch_{metric}"]) == list(range(SMALL_EPOCHS)), (split, logged.keys())
            expected = [row[prefix + metric] for row in history]
            values = [logged[f"epoch_{metric}"][step] for step in range(SMALL_EPOCHS)]
            assert values == pytest.approx(expected, rel=1e-4), (split, metric)


USER_FLAGS = (
    "--data",
    "--models-dir",
    "--results-dir",
    "--epochs",
    "--batch-size",
    "--learning-rate",
    "--seed",
    "--train-size",
    "--val-split",
    "--augment",
    "--precision",
    "--resume",
    "--tensorboard",
)


def help_of(text: str, flag: str) -> str:
    """The help of one flag in --help's text (spaces normalised): after its entry in the options' list."""
    entry = text.split(f"--{flag}", 2)[2].removeprefix(f", --no-{flag}")  # after the usage line's mention
    return entry.split(" --", 1)[0]


def test_cnn_help_lists_every_flag_with_the_values_of_both_presets():
    """train_cnn.py's --help names every flag, and each flag that a preset sets says what each preset sets it to,
    as PRESETS holds it: "(fast: 5, best: 20)", or "(best: on)" where fast leaves it off."""
    result = run_script("train_cnn.py", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())  # argparse wraps help text at any space
    for flag in (*USER_FLAGS, "--preset", "--shifted-views", "--label-smoothing", "--average-weights"):
        assert flag in text, flag
    fast, best = train_cnn.PRESETS["fast"], train_cnn.PRESETS["best"]
    assert set(fast) == set(best)
    for name in fast:
        said = {True: "on"}.get(best[name], f"{best[name]:g}")
        expected = f"(best: {said})" if fast[name] in (False, 0) else f"(fast: {fast[name]:g}, best: {said})"
        said_in_help = help_of(text, name.replace("_", "-"))
        assert expected in said_in_help, (name, expected, said_in_help)
    assert "--track-test" not in text and "--cpu-replicas" not in text  # flags of older versions are gone
    assert "--distribute" not in text and "--deterministic" not in text  # gone with issue 31


def test_dense_help_lists_every_flag_with_its_default():
    result = run_script("train_dense.py", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    text = " ".join(result.stdout.split())
    for flag in USER_FLAGS:
        assert flag in text, flag
    assert "--preset" not in text and "--shifted-views" not in text and "--distribute" not in text
    assert "--label-smoothing" not in text and "--average-weights" not in text  # the best CNN's, not a dense one's
    args = train_dense.parse_args([])
    assert (args.epochs, args.batch_size, args.learning_rate, args.val_split) == (14, 1024, 0.005, 0.1)
    for flag, value in {"epochs": "14", "batch-size": "1024", "learning-rate": "0.005", "val-split": "0.1"}.items():
        assert value in help_of(text, flag).replace("(", " ").replace(")", " ").split(), (flag, help_of(text, flag))


# --- flags that change the training itself, run in this process (no Keras import to wait for) --------------------
def run_main(script, *argv, callbacks=()):
    """A training script's main(argv, callbacks) called here, as the tools call it: the precision policy that main()
    sets for the whole process is put back afterwards, however it ends."""
    policy = keras.mixed_precision.global_policy()
    try:
        return script.main(list(argv), callbacks=callbacks)
    finally:
        keras.mixed_precision.set_global_policy(policy)


class Observe(keras.callbacks.Callback):
    """Runs after the script's own callbacks: what training sees, step by step."""

    def __init__(self):
        super().__init__()
        self.rates, self.dtypes, self.parameters, self.name, self.weights = [], {}, 0, "", None

    def on_train_begin(self, logs=None):
        self.parameters, self.name = self.model.count_params(), self.model.name
        self.dtypes = {layer.name: (layer.dtype_policy.name, layer.compute_dtype) for layer in self.model.layers}
        self.weights = np.concatenate([np.ravel(w) for w in self.model.get_weights()])  # before the first step

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))  # this step's rate


def test_one_cycle_warms_up_for_a_tenth_of_the_steps_then_cosine_to_zero():
    schedule = train_cnn.one_cycle(0.004, 200)  # warm-up: steps 0-20; then 180 steps of cosine decay
    rate = {step: float(schedule(step)) for step in (0, 10, 20, 110, 200)}
    assert rate[0] == 0.0
    assert rate[10] == pytest.approx(0.002, rel=1e-5)  # linear: half-way up at 5% of the steps
    assert rate[20] == pytest.approx(0.004, rel=1e-5)  # the peak at 10%
    assert rate[110] == pytest.approx(0.002, rel=1e-4)  # cosine: half the peak half-way down
    assert rate[200] == pytest.approx(0.0, abs=1e-9)  # 0 at the last step
    assert float(schedule(60)) > float(schedule(61))  # falling all the way
    assert train_dense.one_cycle(0.004, 200).get_config() == schedule.get_config()


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, small_npz):
    """One tiny real run of train_cnn.main in mixed_bfloat16 with --learning-rate 0.00123: what training saw, the
    exit code and the record. 900 training images in batches of 64: 15 steps an epoch, 30 in all, warm-up 3."""
    folder, seen = tmp_path_factory.mktemp("bf16"), Observe()
    argv = ["--precision", "mixed_bfloat16", "--learning-rate", "0.00123", "--seed", "3", "--train-size", "1000"]
    argv += ["--epochs", "2", "--batch-size", "64", *output_flags(folder), "--data", str(small_npz)]
    code = run_main(train_cnn, *argv, callbacks=[seen])
    record = json.loads((folder / "results" / "cnn_run.json").read_text())
    return {"code": code, "seen": seen, "record": record, "folder": folder}


def test_learning_rate_flag_reaches_adam_through_the_one_cycle_schedule(bf16_run):
    rates = bf16_run["seen"].rates
    assert len(rates) == 30
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.00041, rel=1e-4)  # warming up, linearly
    assert rates[3] == pytest.approx(0.00123, rel=1e-5) == max(rates)  # --learning-rate is the peak, at 10%
    assert all(a > b for a, b in zip(rates[3:], rates[4:], strict=False))  # then down every step
    assert rates[-1] < 0.00123 * 0.01  # nearly 0 at the last step of the last epoch
    assert bf16_run["record"]["learning_rate"] == 0.00123


def test_mixed_bfloat16_trains_in_bfloat16_and_says_so(bf16_run):
    assert bf16_run["code"] == 0
    record = bf16_run["record"]
    assert record["precision"] == "mixed_bfloat16" and record["test_accuracy"] > 0.3, record
    dtypes = bf16_run["seen"].dtypes
    assert dtypes["conv1"] == ("mixed_bfloat16", "bfloat16")
    assert dtypes["probabilities"] == ("float32", "float32")  # the softmax stays in float32
    model = keras.saving.load_model(bf16_run["folder"] / "models" / "cnn.keras", safe_mode=True)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"


def test_no_augment_wins_over_the_best_presets_augmentation(tmp_path, small_npz):
    """--preset best moves the digits while it trains; --no-augment, given with it, wins: the flags say so, the
    network that main() trains has no augmentation layer, and the run's config.json (what --resume compares) says
    so too (stopped as training begins: only the network is wanted)."""

    class Enough(Exception):
        pass

    class StopAtOnce(keras.callbacks.Callback):  # after Observe has looked
        def on_train_begin(self, logs=None):
            raise Enough

    assert train_cnn.parse_args(["--preset", "best"]).augment is True
    assert train_cnn.parse_args(["--no-augment", "--preset", "best"]).augment is False
    seen = Observe()
    flags = ["--preset", "best", "--no-augment", "--train-size", "256", "--precision", "float32"]
    with pytest.raises(Enough):
        run_main(train_cnn, *flags, *output_flags(tmp_path), "--data", str(small_npz), callbacks=[seen, StopAtOnce()])
    assert seen.name == "cnn_best" and "conv3" in seen.dtypes, seen.dtypes  # the best preset's network ...
    assert "augmentation" not in seen.dtypes, seen.dtypes  # ... without the moved digits
    (folder,) = (tmp_path / "models").glob(f".cnn-run-{os.getpid()}-*")
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["preset"], saved["augment"], saved["shifted_views"]) == ("best", False, True)


class AveragedWeights(keras.callbacks.Callback):
    """The weights after the last step, and (once fit() has finished) the weights it ended on and Adam's averages."""

    def on_epoch_end(self, epoch, logs=None):
        self.last_step = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]

    def on_train_end(self, logs=None):  # Keras calls it after fit() has put the averages in (Adam's use_ema)
        self.final = [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]
        self.averages = [keras.ops.convert_to_numpy(w) for w in self.model.optimizer._model_variables_moving_average]


def test_preset_best_trains_the_lean_network_and_saves_its_shifted_views(tmp_path, small_npz, mnist):
    """--preset best on a slice: build_best_model() (150,602 parameters) with augmentation, labels smoothed, the
    run ending on the averaged weights, and the saved model — the network inside five shifted views — loads in
    safe mode, where compare.py, predict.py and the page load it, and answers as its network averaged."""
    seen, averaged = Observe(), AveragedWeights()
    flags = ["--preset", "best", "--train-size", "3000", "--epochs", "2", "--precision", "float32"]
    assert run_main(train_cnn, *flags, *output_flags(tmp_path), "--data", str(small_npz),
                    callbacks=[seen, averaged]) == 0  # fmt: skip
    assert (seen.name, seen.parameters) == ("cnn_best", 150_602)
    assert "augmentation" in seen.dtypes and "conv3" in seen.dtypes
    for final, average in zip(averaged.final, averaged.averages, strict=True):
        np.testing.assert_array_equal(final, average)  # fit() ended on the averages, not on the last step's
    assert not all(np.array_equal(f, w) for f, w in zip(averaged.final, averaged.last_step, strict=True))
    record = json.loads((tmp_path / "results" / "cnn_run.json").read_text())
    assert (record["label_smoothing"], record["average_weights"], record["shifted_views"]) == (0.1, True, True)
    assert record["parameters"] == 150_602 and record["test_accuracy"] > 0.7, record
    model = keras.saving.load_model(tmp_path / "models" / "cnn.keras", safe_mode=True)
    assert model.name == "cnn_best_views" and model.count_params() == 150_602
    network = model.get_layer("cnn_best")
    images = mnist.x_test[:64, :, :, None].astype(np.float32)
    answers = [np.asarray(network(moved(images, r, c), training=False)) for r, c in train_cnn.SHIFTS]
    expected = np.mean(answers, axis=0)  # its augmentation off, as when the model answers
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=1e-4, atol=1e-5)



# --- any Keras backend: a small run under JAX, its model loaded by TensorFlow -------------------------------------
PREDICT_WITH_TENSORFLOW = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
with np.load(sys.argv[2], allow_pickle=False) as mnist:
    images, labels = mnist["x_test"], mnist["y_test"]
probabilities = model.predict(images[..., None], batch_size=2048, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "sums": [float(p.sum()) for p in probabilities[:5]],
                  "accuracy": float((probabilities.argmax(axis=1) == labels).mean())}))
"""


@pytest.mark.parametrize("name", ["cnn", "dense"])
def test_runs_under_jax_and_the_model_it_saves_loads_with_tensorflow(tmp_path, name):
    """KERAS_BACKEND=jax: a small run ends with exit 0, the line before training names the backend, and the model
    it saved loads in another process with TensorFlow's backend (safe mode) and answers as it did under JAX: the
    same test accuracy on the 10,000 test images, to a few images (two backends round differently)."""
    flags = ["--epochs", "1", "--train-size", "2000", "--batch-size", "64", *output_flags(tmp_path), *data_flags()]
    result = run_script(f"train_{name}.py", *flags, env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "training on 1800 images, validating on 200; backend jax, precision float32, seed 1" in lines, lines[:20]
    record = json.loads((tmp_path / "results" / f"{name}_run.json").read_text())
    assert (record["backend"], record["epochs"], record["test_images"]) == ("jax", 1, 10_000), record
    loaded = subprocess.run(
        [sys.executable, "-c", PREDICT_WITH_TENSORFLOW, str(tmp_path / "models" / f"{name}.keras"), str(mnist_npz())],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    answer = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert answer["backend"] == "tensorflow"
    assert answer["sums"] == pytest.approx([1.0] * 5, abs=1e-4)  # ten probabilities per image
    assert answer["accuracy"] > 0.6 and answer["accuracy"] == pytest.approx(record["test_accuracy"], abs=3e-4)
