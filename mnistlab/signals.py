"""Ctrl-C and SIGTERM in the scripts: one line and the right exit code at every moment of a run.

- From the first import (TensorFlow takes seconds to import) until :func:`cli.run` starts: "stopped while
  starting", exit 130 or 143 — there is nothing to clean up yet.
- During the run: raised as an exception (:class:`Terminated` is SIGTERM's ``KeyboardInterrupt``), so it
  unwinds through the same ``finally`` blocks as Ctrl-C: temp files go, the --resume backup stays. While Keras'
  fit() runs it is not raised where it lands — possibly inside TensorFlow tracing a step, which can leave its
  native state corrupt — but kept in :data:`stops` and raised between two steps by callbacks.StopOnSignal.
- After the run, while TensorFlow shuts down: there is nothing left to stop; the process exits with the run's
  own exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Terminated(KeyboardInterrupt):
    """SIGTERM — what ``timeout``, ``docker stop``, job schedulers and closing terminals send — handled exactly like
    Ctrl-C."""


@dataclass
class Stops:
    deferred: bool = False  # fit() is running: keep a signal in ``pending`` for StopOnSignal to raise
    pending: KeyboardInterrupt | None = None


stops = Stops()


@dataclass
class ExitCode:
    value: int = 0


def stopped_while_starting(signum: int, frame: object) -> None:
    print(
        f"\n{'stopped (SIGTERM)' if signum == signal.SIGTERM else 'interrupted'} while starting: nothing was "
        "written; run the same command again",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


def exit_with(code: int) -> Callable[[int, object], None]:
    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    return handler


def raise_or_defer(signum: int, frame: object) -> None:
    stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    if stops.deferred:
        stops.pending = stop
        return
    raise stop


@contextlib.contextmanager
def raised_as_exceptions(entry_point: bool) -> Iterator[ExitCode]:
    """For the length of a run, Ctrl-C and SIGTERM become exceptions; afterwards, for a process's entry point
    (``entry_point``), a signal exits with the code the body stored in the yielded :class:`ExitCode`."""
    handled = [signal.SIGTERM] if threading.current_thread() is threading.main_thread() else []
    if handled and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, stopped_while_starting):
        handled.append(signal.SIGINT)  # (not where SIGINT is ignored, as in a background job)
    previous = {number: signal.signal(number, raise_or_defer) for number in handled}
    exit_code = ExitCode()
    try:
        yield exit_code
    finally:
        stops.deferred, stops.pending = False, None
        for number, handler in previous.items():
            signal.signal(number, handler)
    if entry_point:
        for number in handled:
            signal.signal(number, exit_with(exit_code.value))


def catch_signals_from_the_start() -> None:
    """When one of this project's scripts is the program (not when mnistlab is imported by a test or a notebook),
    Ctrl-C and SIGTERM get one line from the first import on, not an import traceback or a silent kill."""
    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script is None or Path(script).resolve().parent != PROJECT_ROOT:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stopped_while_starting)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, stopped_while_starting)


catch_signals_from_the_start()
