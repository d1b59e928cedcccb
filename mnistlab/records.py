"""Run records on disk: JSON written atomically, models saved atomically, an append-only run log.

"Atomically" means: write a temp file in the same directory, then ``os.replace`` it over the target. A crash,
Ctrl-C or ``kill -9`` at any moment leaves either the old file or the new one — never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnistlab import UserError

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


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``target``; on success it replaces ``target``, on any failure it is removed.

    The temp name keeps the target's suffix, because some writers (``model.save``) insist on it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    handle, temp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}.tmp-{os.getpid()}-", suffix=target.suffix
    )
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files like any other
    try:
        yield Path(temp)
        os.replace(temp, target)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
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
    with atomic_path(path) as temp:
        model.save(temp)
    return Path(path)


def append_run_log(results_dir: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one line to ``runs.jsonl``: every run is kept, even when its JSON record is replaced.

    One ``write`` of one line in append mode: concurrent runs interleave whole lines, never half lines.
    """
    line = json.dumps(record, sort_keys=False) + "\n"
    with open(Path(results_dir) / RUN_LOG, "a", encoding="utf-8") as log:
        log.write(line)


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
