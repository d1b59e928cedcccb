"""What differs on macOS and Windows, checked here where it is cheap: ru_maxrss in bytes, and two compare.py runs at
once under Windows' rules (tests/windows_rules.py). The training scripts no longer look at the CPU (no /proc/cpuinfo,
no AMX detection): their runs under Windows' rules are in tests/test_standalone.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, data_flags
from windows_rules import PRELUDE

from mnistlab import records


def test_peak_memory_reads_bytes_on_macos_and_kibibytes_on_linux(monkeypatch, tmp_path):
    usage = types.SimpleNamespace(ru_maxrss=2**30)
    monkeypatch.setitem(sys.modules, "resource", types.SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: usage))
    no_proc = str(tmp_path / "no-such-status")  # macOS and Windows have no /proc
    monkeypatch.setattr(sys, "platform", "darwin")
    assert records.peak_memory_mib(no_proc) == 1024
    monkeypatch.setattr(sys, "platform", "linux")
    assert records.peak_memory_mib(no_proc) == 2**20
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 4096000 kB\nVmHWM:\t  524288 kB\nVmRSS:\t 1000 kB\n")
    assert records.peak_memory_mib(str(status)) == 512  # Linux: the process's own high-water mark
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows: no resource module
    assert records.peak_memory_mib(no_proc) is None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only: /proc/self/status")
def test_a_child_reports_its_own_peak_memory_not_its_parents(tmp_path):
    """The benchmark's runs are children of a process that grows as it times each model: each must report its own
    peak (ru_maxrss would carry the parent's over, across exec)."""
    ballast = np.ones(2**27, np.float32)  # 512 MiB resident in this process
    child = subprocess.run(
        [sys.executable, "-c", "from mnistlab import records; print(records.peak_memory_mib())"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert ballast.sum() > 0 and float(child.stdout) < 300, child.stdout


# Each compare.py run, about to put its files in place (os.replace), waits there for the other: both have written
# their temp files, and the two runs' renames come together. A rename that Windows refuses (the file is held open)
# is noted in MEET as refused-PID, for the test to see.
MEET_BEFORE_THE_RENAMES = """
import os, pathlib, time
MEET = pathlib.Path(MEET)
_replace = os.replace  # Windows' rules
def replace(src, dst, **kwargs):
    me = str(os.getpid())
    if os.path.basename(dst).startswith("comparison.") and not (MEET / me).exists():
        (MEET / me).touch()
        deadline = time.monotonic() + 120
        while len([path for path in MEET.iterdir() if path.name.isdigit()]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the other compare.py never came to its renames")
            time.sleep(0.01)
    try:
        return _replace(src, dst, **kwargs)
    except PermissionError:
        (MEET / f"refused-{me}").touch()
        raise
os.replace = replace
"""


def test_two_compare_runs_at_once_under_windows_rules(trained, tmp_path):
    """Both write their comparison at once (each waits, its temp files written, until the other is as far), while
    a reader holds the previous comparison.json open, as an editor on Windows would: Windows refuses both runs'
    renames, and each waits (its retry loop) until the reader closes the file, which the test does once it has seen
    both refused. Both end with exit 0 and no traceback, leaving one whole comparison.json, the figure, and no temp
    file or folder."""
    shutil.copy(ROOT / "compare.py", tmp_path)
    shutil.copytree(trained["models"], tmp_path / "models")
    results = shutil.copytree(trained["results"], tmp_path / "results")
    (results / "comparison.json").write_text('{"data": "the previous comparison"}\n')
    meet = tmp_path / "meet"
    meet.mkdir()
    run_as_main = "import runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    runner = f"{PRELUDE}\nMEET = {str(meet)!r}\n{MEET_BEFORE_THE_RENAMES}\n{run_as_main}"
    reader = open(results / "comparison.json")  # noqa: SIM115 - held open until both renames were refused
    try:
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", runner, "compare.py", *data_flags()],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        refused = [meet / f"refused-{run.pid}" for run in runs]
        deadline = time.monotonic() + 300
        while not all(path.exists() for path in refused):
            ended = [run.args for run in runs if run.poll() is not None]
            assert not ended and time.monotonic() < deadline, ("no refused rename from both runs", ended)
            time.sleep(0.01)
    finally:
        reader.close()
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0 and "Traceback" not in err, err[-2000:]
    pids = [str(run.pid) for run in runs]
    assert sorted(p.name for p in meet.iterdir()) == sorted([*pids, *(f"refused-{pid}" for pid in pids)])
    rows = json.loads((results / "comparison.json").read_text())["models"]
    assert set(rows) == {"cnn", "dense"}
    assert (results / "comparison.png").read_bytes().startswith(b"\x89PNG")
    assert not [p.name for p in results.iterdir() if ".tmp" in p.name]
