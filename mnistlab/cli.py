"""Command-line plumbing shared by every script: flags, validation of their values, and error handling.

Bad flags end in one usage line and exit 2 (argparse); problems found later are a :class:`UserError`: one
line and exit 1 (see :func:`run`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mnistlab import UserError, records, signals

DEFAULT_MODELS_DIR = "models"
DEFAULT_RESULTS_DIR = "results"
# The two saved models the comparison is about, and the command that makes each (named in "not found" errors).
SAVED_MODELS = {"cnn": "python train_cnn.py", "dense": "python train_dense.py"}
PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # --precision: auto is bfloat16 on AMX-BF16 CPUs, else float32


def number_type(
    convert: Callable[[str], float], accept: Callable[[float], bool], expected: str, requirement: str
) -> Callable[[str], float]:
    """An argparse ``type=``: parse with ``convert``, then check ``accept``.

    Both failures raise ArgumentTypeError, which argparse prints as one usage line and exits with status 2.
    """

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{requirement}, got {value}")
        return value

    return parse


positive_int = number_type(int, lambda v: v >= 1, "a whole number", "must be at least 1")
non_negative_int = number_type(int, lambda v: v >= 0, "a whole number", "must be 0 or more")  # seeds
held_out_fraction = number_type(  # 0 is allowed: train on every image, validate on none
    float, lambda v: 0.0 <= v < 1.0, "a number between 0 and 1", "must be between 0 and 1 (0 included, 1 not)"
)
positive_float = number_type(float, lambda v: v > 0.0, "a number", "must be greater than 0")  # learning rates
port_number = number_type(int, lambda v: 0 <= v <= 65535, "a whole number", "must be between 0 and 65535")


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser that shows defaults in ``--help`` and keeps the docstring's line breaks."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )


def add_io_flags(parser: argparse.ArgumentParser) -> None:
    """--data, --models-dir, --results-dir: where every script reads and writes."""
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="a Keras-style .npz (x_train, y_train, x_test, y_test) or a directory with the four MNIST IDX files "
        "(plain or .gz); default: Keras' MNIST, else the verified copy on PyPI (see README)",
    )
    parser.add_argument(
        "--models-dir", metavar="DIR", default=DEFAULT_MODELS_DIR, help="where models are saved (default: %(default)s)"
    )
    parser.add_argument(
        "--results-dir",
        metavar="DIR",
        default=DEFAULT_RESULTS_DIR,
        help="where JSON records and PNG figures go (default: %(default)s)",
    )


def writable_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Create ``path`` if needed and prove we can write there, before any long work starts."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise UserError(
            f"cannot write to the {what} {str(directory)!r}: {reason}; choose another with --{what.replace(' ', '-')}"
        ) from None
    return directory


# Set by a training run: where it stands ("in epoch 3 of 14") and how to go on, for the line printed when it stops.
progress: Callable[[], tuple[str, str] | None] | None = None


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main`` the way users expect: every way it can end is one line and an exit code.

    - a :class:`UserError`: ``error: ...`` and its exit code (1);
    - Ctrl-C (130) or SIGTERM (143): where a training run stood and how to go on with ``--resume``;
    - a folder that is full, over quota or read-only: which one, and how much this run needs there (1).

    Files are written atomically, so none of these leaves a half-written file behind. Called as the process's
    entry point (``argv`` None), a SIGTERM that comes after the run, while TensorFlow shuts down, has nothing
    left to stop: the process ends with the run's own exit code instead of as "killed".
    """
    with signals.raised_as_exceptions(entry_point=argv is None) as exit_code:
        try:
            exit_code.value = outcome(main, argv)
        finally:
            records.release_locks()
    return exit_code.value


def outcome(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None) -> int:
    """``main``'s exit code, with every expected way of failing turned into one line on stderr."""
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, signals.Terminated)
        where, how = (progress() if progress else None) or ("", "run the same command again")
        what = "stopped (SIGTERM)" if terminated else "interrupted"
        print(f"\n{what}{f' {where}' if where else ''}: nothing was half-written; {how}", file=sys.stderr)
        return 128 + signal.SIGTERM if terminated else 128 + signal.SIGINT
    except OSError as error:
        message = records.no_room_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def parse_training_flags(
    description: str | None,
    argv: Sequence[str] | None,
    *,
    defaults: dict[str, Any] | None = None,
    presets: dict[str, dict[str, Any]] | None = None,
) -> argparse.Namespace:
    """A training script's flags, with the script's own measured defaults.

    With ``presets`` (the first is the default), ``--preset NAME`` is read first and sets the defaults of the
    flags it names, so that ``--help --preset best`` shows that preset's values; a flag given on the command
    line still wins over its preset.
    """
    chosen = dict(defaults or {})
    parser = new_parser(description)
    if presets:
        names = list(presets)
        # add_help=False: only the full parser below answers --help, with every flag in it.
        first_pass = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        first_pass.add_argument("--preset", default=names[0])  # an unknown name is refused by the full parser
        chosen.update(presets.get(first_pass.parse_known_args(argv)[0].preset, {}))
        parser.add_argument(
            "--preset",
            choices=names,
            default=names[0],
            help="a set of defaults for the flags below, shown as they apply (default: %(default)s)",
        )
    add_training_flags(parser)
    parser.set_defaults(**chosen)
    return parser.parse_args(argv)


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Every knob of a training run; the defaults here are overridden by each script's measured ones."""
    add_io_flags(parser)
    parser.add_argument(
        "--epochs", type=positive_int, default=1, help="passes over the training images (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=128, help="images per step and device (default: %(default)s)"
    )
    parser.add_argument(
        "--learning-rate",
        type=positive_float,
        default=1e-3,
        help="peak learning rate of Adam: linear warm-up, then cosine decay to 0 (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=1,
        help="random seed for weights, shuffling, dropout (default: %(default)s)",
    )
    parser.add_argument(
        "--train-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N training images, for quick runs (default: all)",
    )
    parser.add_argument(
        "--val-split",
        type=held_out_fraction,
        default=0.1,
        metavar="FRACTION",
        help="fraction held out of the training images to validate on (0: train on all, validate on none); "
        "the test set is only used once, at the end (default: %(default)s)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train on randomly rotated, zoomed and shifted digits (augmentation layers, off at test) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bfloat16 compute where the CPU has AMX-BF16 units, else float32 (default: %(default)s)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow op determinism: the same --seed gives the same history, a little slower",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same command from its last finished epoch",
    )
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also write TensorBoard logs to DIR (view them with: tensorboard --logdir DIR)",
    )
    parser.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="none: one device; mirrored: all local GPUs (or --cpu-replicas logical CPUs); "
        "multiworker: machines described by the TF_CONFIG variable (default: %(default)s)",
    )
    parser.add_argument(
        "--cpu-replicas",
        type=positive_int,
        default=2,
        metavar="N",
        help="with --distribute mirrored on a machine without GPUs: logical CPU devices to "
        "mirror over, to try data parallelism on a laptop (default: %(default)s)",
    )
    # For benchmark.py only, hence hidden from --help: test accuracy after every epoch (never used for tuning).
    parser.add_argument("--track-test", action="store_true", help=argparse.SUPPRESS)
