"""Run records on disk: JSON written atomically, models saved atomically, an append-only run log.

"Atomically" means: write a temp file in the same directory, then ``os.replace`` it over the target. A crash,
Ctrl-C or ``kill -9`` at any moment leaves either the old file or the new one — never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnistlab import UserError

try:
    import fcntl  # POSIX file locks; Windows has none (see lock_folder)
except ImportError:  # pragma: no cover - Windows
    fcntl = None

RUN_LOG = "runs.jsonl"


def remove_stale_temps(target: Path) -> None:
    """Delete temp files that a killed writer (``kill -9``, power loss) left beside ``target``.

    Temp names carry the writer's PID; a file whose writer is no longer running is debris, never a file
    that another live process is still writing.
    """
    for temp in target.parent.glob(f".{target.stem}.tmp-*{target.suffix}"):
        pid = temp.name.removeprefix(f".{target.stem}.tmp-").split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                temp.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_beside(target: Path) -> Path:
    """A new empty temp file beside ``target``, named after this process (see :func:`remove_stale_temps`).

    The temp name keeps the target's suffix, because some writers (``model.save``) insist on it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    handle, temp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.tmp-{os.getpid()}-", suffix=target.suffix
    )
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files like any other
    return Path(temp)


@contextmanager
def reported_as(target: Path) -> Iterator[None]:
    """Name ``target`` in an OSError that names no file, so that a full disk is reported with its folder."""
    try:
        yield
    except OSError as error:
        error.filename = error.filename or str(target)
        raise


class AllOrNothing:
    """Several files written as one: each to a temp file first; only when all of them (and the run-log line)
    are written do the temps replace their targets. A failure part-way — a full disk, Ctrl-C — changes none."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []  # (temp, target)
        self.log_lines: list[tuple[Path, dict[str, Any]]] = []

    def __enter__(self) -> AllOrNothing:
        return self

    def path_for(self, target: str | os.PathLike[str]) -> Path:
        temp = temp_beside(Path(target))
        self.pending.append((temp, Path(target)))
        return temp

    def save_model(self, model, target: str | os.PathLike[str]) -> None:
        with reported_as(Path(target)):
            model.save(self.path_for(target))

    def write_json(self, target: str | os.PathLike[str], payload: Any) -> None:
        with reported_as(Path(target)):
            self.path_for(target).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")

    def append_run_log(self, results_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
        self.log_lines.append((Path(results_dir), record))  # appended at commit, before the renames

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        try:
            if kind is None:
                for results_dir, record in self.log_lines:
                    append_run_log(results_dir, record)
                for temp, target in self.pending:
                    with reported_as(target):
                        os.replace(temp, target)
        finally:
            for temp, _ in self.pending:
                if temp.exists():
                    temp.unlink()


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it replaces ``target``, on any failure it is removed."""
    with AllOrNothing() as files, reported_as(Path(target)):
        yield files.path_for(target)


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with AllOrNothing() as files:
        files.write_json(path, payload)
    return Path(path)


def read_json(path: str | os.PathLike[str], made_by: str) -> Any:
    """Read a JSON record, or say in one line which command makes it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run `{made_by}` first")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a readable JSON record ({error}); run `{made_by}` again") from None


def save_model(model, path: str | os.PathLike[str]) -> Path:
    """``model.save`` to a temp ``.keras`` file, then rename it over ``path``."""
    with AllOrNothing() as files:
        files.save_model(model, path)
    return Path(path)


def append_run_log(results_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one line to ``runs.jsonl``: every run is kept, even when its JSON record is replaced.

    Runs that finish at the same moment take turns (an exclusive lock on the log), and a write that fails
    half-way (a full disk) is cut back off, so the log only ever holds whole lines.
    """
    path = Path(results_dir) / RUN_LOG
    line = (json.dumps(record, sort_keys=False) + "\n").encode()
    with reported_as(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            size = os.fstat(descriptor).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(descriptor, view) :]
            except OSError:
                os.ftruncate(descriptor, size)
                raise
        finally:
            os.close(descriptor)  # also releases the lock


def cpu_description() -> str:
    """The CPU model and core count, e.g. 'Intel(R) Xeon(R) Platinum 8488C, 2 cores'."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def environment() -> dict[str, Any]:
    """Library versions and hardware, so a record says what produced it."""
    import keras  # only when writing records, after training imported it anyway
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


# ---------------------------------------------------------------------------------------------------------------
# Bad conditions: a full disk, two runs at once
# ---------------------------------------------------------------------------------------------------------------
# The errors that mean "this folder cannot take more bytes": full, over quota, read-only.
NO_ROOM = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its disk quota", errno.EROFS: "is read-only"}
space_needed: dict[str, int] = {}  # folder -> bytes this process will write there (set by check_free_space)


def mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def check_free_space(needs: dict[Path, int], flag: dict[Path, str]) -> None:
    """Refuse to start when a folder's file system has less room than this run will write into it.

    ``needs`` maps folders to bytes; folders on one file system share its free space. ``flag`` names the
    option that moves each folder elsewhere. Checked before training, so a full disk shows in the first
    seconds rather than after the last epoch.
    """
    by_device: dict[int, list[Path]] = {}
    for folder, size in needs.items():
        space_needed[str(folder)] = size
        by_device.setdefault(os.stat(folder).st_dev, []).append(folder)
    for folders in by_device.values():
        total = sum(needs[folder] for folder in folders)
        free = shutil.disk_usage(folders[0]).free
        if free < total:
            where = " and ".join(str(folder) for folder in folders)
            flags = " or ".join(sorted({flag[folder] for folder in folders}))
            raise UserError(
                f"not enough disk space: {where} has {mib(free)} free, but this run writes about {mib(total)} "
                f"there; free some space or choose another {flags}"
            )


def no_room_message(error: OSError) -> str | None:
    """One line for a write that failed for lack of room (ENOSPC, EDQUOT, EROFS); None for any other error.

    h5py reports a failed write as an OSError whose errno is only in its text, hence the second check.
    """
    code = error.errno
    if code not in NO_ROOM:
        text = str(error)
        code = next((number for number in NO_ROOM if f"errno = {number}," in text), None)
        if code is None:
            return None
    folder = Path(error.filename).parent if error.filename else None
    needed = space_needed.get(str(folder)) if folder else None
    where = str(folder) if folder else "one of the output folders (" + (", ".join(space_needed) or "?") + ")"
    return (
        f"{where} {NO_ROOM[code]} ({os.strerror(code)}); nothing half-written was left"
        + (f"; this run needs about {mib(needed)} there" if needed else "")
        + ": free some space, or choose another folder, and run the same command again"
    )


_held_locks: list[tuple[Path, Any]] = []


def lock_folder(directory: Path, name: str, what: str) -> None:
    """Hold ``directory/.<name>.lock`` for the rest of this process: one run of ``name`` per folder at a time.

    The lock is ``flock``'d, so the kernel drops it when its process ends, however it ends: a lock file left by
    ``kill -9`` is simply taken over by the next run (and its ``--resume``). A second run while the first is
    alive refuses at start, naming the first's PID, before it touches any of the first's files.
    """
    if fcntl is None:  # Windows: no flock; concurrent runs there are on the user, as with any program
        return
    path = directory / f".{name}.lock"
    while True:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open until the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = ""
            for _ in range(40):  # the holder writes its PID just after it takes the lock
                handle.seek(0)
                owner = handle.read().strip()
                if owner:
                    break
                time.sleep(0.025)
            handle.close()
            owner = owner or "unknown"
            raise UserError(
                f"another {what} (PID {owner}) is writing to {directory}; wait for it to finish, "
                f"or give this run another --models-dir"
            ) from None
        # The holder before us may have removed the file after we opened it: lock the file that is there now.
        if path.exists() and os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
            break
        handle.close()
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held_locks.append((path, handle))


def release_locks() -> None:
    """Remove and unlock this process's lock files (also done by the kernel, minus the removal, on any exit)."""
    while _held_locks:
        path, handle = _held_locks.pop()
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()
