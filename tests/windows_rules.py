"""Windows' rules, imitated on Linux, for running the tutorial scripts as they would run there.

``install()`` is called first thing in a script's own process (see ``PRELUDE``). From then on:

- the POSIX-only modules (``resource``, ``fcntl``, ``pwd``, ``grp``, ``termios``) cannot be imported, and
  ``signal.SIGHUP`` does not exist;
- ``msvcrt.locking`` locks bytes from the file's current position, as Windows does, and those bytes cannot be
  read by another process while they are locked (Windows' locks are mandatory): a lock that covered the PID
  would hide it from the run that is refused;
- a file that any process holds open (this one included) cannot be removed, renamed or replaced: ``os.remove``,
  ``os.unlink``, ``os.rename`` and ``os.replace`` raise ``PermissionError`` with ``winerror`` 32, as Windows does
  ("The process cannot access the file because it is being used by another process"). ``shutil.rmtree`` goes
  through them. Which files are open is read from ``/proc/*/fd``, so opens by native code (h5py, TensorFlow) and
  by other processes count too.
"""

from __future__ import annotations

import builtins
import errno
import fcntl as posix_fcntl
import multiprocessing  # noqa: F401 - imported before msvcrt exists: it decides "am I on Windows?" by it
import os
import shutil  # noqa: F401 - imported before os is patched: rmtree keeps its fd-based walk
import signal
import subprocess  # noqa: F401 - as multiprocessing
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRELUDE = f"import sys; sys.path.insert(0, {str(HERE)!r}); import windows_rules; windows_rules.install()"
SHARING_VIOLATION = 32  # ERROR_SHARING_VIOLATION

real_remove, real_rename, real_replace, real_open = os.remove, os.rename, os.replace, builtins.open
locked_here: set[tuple[int, int]] = set()  # (st_dev, st_ino) of the files this process has locked


def full_path(path, dir_fd: int | None) -> str:
    path = os.fsdecode(path)
    if dir_fd is not None and not os.path.isabs(path):
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.realpath(path)


def held_open(path: str) -> bool:
    """Whether any process on this machine has ``path`` open."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    return True
            except OSError:
                continue
    return False


def refuse_if_open(*paths: str) -> None:
    for path in paths:
        if os.path.isfile(path) and held_open(path):
            error = PermissionError(
                errno.EACCES,
                f"[WinError {SHARING_VIOLATION}] The process cannot access the file because it is being used by "
                "another process",
                path,
            )
            error.winerror = SHARING_VIOLATION
            raise error


def remove(path, *, dir_fd=None):
    refuse_if_open(full_path(path, dir_fd))
    return real_remove(path, dir_fd=dir_fd)


def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
    refuse_if_open(full_path(src, src_dir_fd), full_path(dst, dst_dir_fd))
    return real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
    refuse_if_open(full_path(src, src_dir_fd), full_path(dst, dst_dir_fd))
    return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)


def locking(fd: int, mode: int, nbytes: int) -> None:
    """msvcrt.locking: LK_NBLCK (2) locks ``nbytes`` from the current position, or fails at once."""
    if mode != 2:
        raise NotImplementedError(f"the stand-in only knows LK_NBLCK, not mode {mode}")
    try:
        posix_fcntl.lockf(fd, posix_fcntl.LOCK_EX | posix_fcntl.LOCK_NB, nbytes, 0, os.SEEK_CUR)
    except OSError:
        raise PermissionError(errno.EACCES, "Permission denied") from None
    info = os.fstat(fd)
    locked_here.add((info.st_dev, info.st_ino))


class LockedRegionsFile:
    """A file whose reads fail, as on Windows, where another process has locked the bytes they would read."""

    def __init__(self, file):
        self._file = file

    def read(self, size: int = -1):
        fd, start = self._file.fileno(), self._file.tell()
        info = os.fstat(fd)
        length = info.st_size - start if size is None or size < 0 else size
        if length > 0 and (info.st_dev, info.st_ino) not in locked_here:
            try:  # a shared lock is refused exactly where another process holds an exclusive one
                posix_fcntl.lockf(fd, posix_fcntl.LOCK_SH | posix_fcntl.LOCK_NB, length, start, os.SEEK_SET)
                posix_fcntl.lockf(fd, posix_fcntl.LOCK_UN, length, start, os.SEEK_SET)
            except OSError:
                raise PermissionError(errno.EACCES, "[WinError 33] The process cannot access the file because "
                                      "another process has locked a portion of the file") from None
        return self._file.read(size)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def open_(file, *args, **kwargs):
    opened = real_open(file, *args, **kwargs)
    if isinstance(file, (str, os.PathLike)) and os.fspath(file).endswith(".lock"):
        return LockedRegionsFile(opened)
    return opened


def install() -> None:
    for name in ("resource", "fcntl", "pwd", "grp", "termios"):
        sys.modules[name] = None  # "No module named ...", as on Windows
    if hasattr(signal, "SIGHUP"):
        del signal.SIGHUP
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK = 0, 1, 2
    msvcrt.locking = locking
    sys.modules["msvcrt"] = msvcrt
    os.remove, os.unlink, os.rename, os.replace = remove, remove, rename, replace
    builtins.open = open_
