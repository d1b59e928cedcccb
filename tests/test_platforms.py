"""What differs on macOS and Windows, checked here where it is cheap: no /proc/cpuinfo, ru_maxrss in bytes, and two
compare.py runs at once under Windows' rules (tests/windows_rules.py)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import types

from conftest import ROOT, data_flags
from windows_rules import PRELUDE

import train_cnn
import train_dense
from mnistlab import records


def without_proc_cpuinfo(monkeypatch) -> None:
    real_isfile = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda path: path != "/proc/cpuinfo" and real_isfile(path))


def test_the_scripts_describe_a_cpu_without_proc_cpuinfo(monkeypatch):
    """macOS and Windows have no /proc/cpuinfo: the record names the processor as Python sees it, and bfloat16 is
    never chosen there."""
    without_proc_cpuinfo(monkeypatch)
    monkeypatch.setattr(platform, "processor", lambda: "Apple M3")
    for script in (train_cnn, train_dense):
        assert script.environment()["cpu"] == f"Apple M3, {os.cpu_count()} cores"
        assert script.amx_bf16() is False
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert train_cnn.environment()["cpu"] == f"{platform.machine()}, {os.cpu_count()} cores"


def test_peak_memory_reads_bytes_on_macos_and_kibibytes_on_linux(monkeypatch):
    usage = types.SimpleNamespace(ru_maxrss=2**30)
    monkeypatch.setitem(sys.modules, "resource", types.SimpleNamespace(RUSAGE_SELF=0, getrusage=lambda who: usage))
    monkeypatch.setattr(sys, "platform", "darwin")
    assert records.peak_memory_mib() == 1024
    monkeypatch.setattr(sys, "platform", "linux")
    assert records.peak_memory_mib() == 2**20
    monkeypatch.setitem(sys.modules, "resource", None)  # Windows: no resource module
    assert records.peak_memory_mib() is None


def test_two_compare_runs_at_once_under_windows_rules(trained, tmp_path):
    """Both end with exit 0 and no traceback, and leave one whole comparison.json and no temp file."""
    shutil.copy(ROOT / "compare.py", tmp_path)
    shutil.copytree(trained["models"], tmp_path / "models")
    shutil.copytree(trained["results"], tmp_path / "results")
    runner = f"{PRELUDE}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
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
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0 and "Traceback" not in err, err[-2000:]
    rows = json.loads((tmp_path / "results" / "comparison.json").read_text())["models"]
    assert set(rows) == {"cnn", "dense"}
    assert not [p.name for p in (tmp_path / "results").iterdir() if ".tmp-" in p.name]
