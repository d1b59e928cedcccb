"""Command-line plumbing for the toolbox's tools: flag types, output folders, and how a tool ends.

Bad flags end in one usage line and exit 2 (argparse); problems found later are a :class:`UserError`: one line
and exit 1; Ctrl-C, SIGTERM and SIGHUP one line and 130, 143 or 129 (see :func:`run`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from mnistlab import UserError, records

DEFAULT_MODELS_DIR = "models"
DEFAULT_RESULTS_DIR = "results"
PRECISIONS = ("float32", "mixed_bfloat16")  # the training scripts' --precision choices


def number_type(
    convert: Callable[[str], float], accept: Callable[[float], bool], expected: str, requirement: str
) -> Callable[[str], float]:
    """An argparse ``type=``: parse with ``convert``, then check ``accept``; either failure is one usage line."""

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
non_negative_int = number_type(int, lambda v: v >= 0, "a whole number", "must be 0 or more")  # seeds, indices
port_number = number_type(int, lambda v: 0 <= v <= 65535, "a whole number", "must be between 0 and 65535")


def new_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser that keeps the docstring's line breaks in ``--help``."""
    return argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )


def add_data_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="a Keras-style .npz (python get_mnist.py makes one; from a folder of the four MNIST IDX files: "
        "python get_mnist.py --from-idx DIR); default: keras.datasets.mnist, which downloads MNIST once",
    )


def add_models_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir", metavar="DIR", default=DEFAULT_MODELS_DIR, help="the saved models (default: %(default)s)"
    )


def add_results_flag(parser: argparse.ArgumentParser, help: str = "where figures and records go") -> None:
    parser.add_argument(
        "--results-dir", metavar="DIR", default=DEFAULT_RESULTS_DIR, help=f"{help} (default: %(default)s)"
    )


def add_io_flags(parser: argparse.ArgumentParser) -> None:
    """--data, --models-dir and --results-dir, for a tool that uses all three."""
    add_data_flag(parser)
    add_models_flag(parser)
    add_results_flag(parser)


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """--host and --port of the live page."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (0: any free one) (default: %(default)s)")


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


class Stopped(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP, raised where the program is, so that ``finally`` blocks clean up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_stopped(signum: int, frame: object) -> None:
    raise Stopped(signum)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a tool's ``main`` the way users expect: every way it can end is one line on stderr and an exit code.

    - a :class:`UserError`: ``error: ...`` and its exit code (1);
    - Ctrl-C (130), SIGTERM (143) or SIGHUP (129): one line; files are written atomically, so none is half-written;
    - a folder that is full, over quota or read-only: which one (1).

    The signal handlers are set here, for the length of the run, and only in the main thread; a signal that the
    process ignores (``nohup``, a background job) stays ignored.
    """
    stops = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, raise_stopped) for s in stops if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"stopped ({signal.Signals(signum).name})"
        print(f"\n{what}: nothing was half-written; run the same command again", file=sys.stderr)
        return 128 + signum
    except OSError as error:
        message = records.no_room_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
