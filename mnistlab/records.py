"""Files the tools write: JSON, models and figures, written atomically; what produced them.

"Atomically" means: write a temp file in the same folder, then ``os.replace`` it over the target. A crash, Ctrl-C
or ``kill -9`` at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def remove_stale_temps(target: Path) -> None:
    """Delete temp files that a killed writer (``kill -9``, a power cut) left beside ``target``.

    Temp names carry the writer's PID; a file whose writer is no longer running is debris, never a file that a
    live process is still writing. Where no PID can be tested (Windows), debris is left rather than guessed at.
    """
    for temp in target.parent.glob(f".{target.stem}.tmp-*{target.suffix}"):
        pid = temp.name.removeprefix(f".{target.stem}.tmp-").split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                temp.unlink()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running; on Windows, ``os.kill(pid, 0)`` would stop it instead: say yes."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``target`` (with its suffix: some writers insist on it); on success it replaces
    ``target``, on any failure it is removed. An OSError that names no file is given ``target``'s name."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    handle, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.tmp-{os.getpid()}-", suffix=target.suffix
    )
    os.close(handle)
    temp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files like any other
    try:
        yield temp
        os.replace(temp, target)
    except OSError as error:
        error.filename = error.filename or str(target)
        raise
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2) + "\n")
    return Path(path)


def save_model(model, path: str | os.PathLike[str]) -> Path:
    """``model.save`` to a temp ``.keras`` file, then rename it over ``path``."""
    with atomic_path(path) as temp:
        model.save(temp)
    return Path(path)


def cpu_description() -> str:
    """The CPU model and core count, e.g. 'AMD EPYC, 2 cores'."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} cores"


def environment() -> dict[str, Any]:
    """Library versions and hardware, so a record says what produced it."""
    import keras  # only when writing records, after the tool imported it anyway
    import numpy
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "gpu": ", ".join(gpus) if gpus else "none",
    }


def peak_memory_mib(status: str = "/proc/self/status") -> float | None:
    """This process's peak resident memory; None where the OS does not say (Windows: no ``resource`` module).

    On Linux from ``VmHWM`` in /proc/self/status: ``ru_maxrss`` keeps, across exec, the peak of the process that
    started this one, so every run the benchmark starts would report at least the benchmark's own memory."""
    try:
        with open(status) as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# The errors that mean "this folder cannot take more bytes": full, over quota, read-only.
NO_ROOM = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its disk quota", errno.EROFS: "is read-only"}


def no_room_message(error: OSError) -> str | None:
    """One line for a write that failed for lack of room (ENOSPC, EDQUOT, EROFS); None for any other error."""
    if error.errno not in NO_ROOM:
        return None
    folder = Path(error.filename).parent if error.filename else "one of the output folders"
    return (
        f"{folder} {NO_ROOM[error.errno]} ({os.strerror(error.errno)}); nothing half-written was left: free some "
        "space, or choose another folder, and run the same command again"
    )
