"""What differs on macOS and Windows, checked here where it is cheap: no /proc/cpuinfo, ru_maxrss in bytes, and two
compare.py runs at once under Windows' rules (tests/windows_rules.py)."""

from __future__ import annotations

import json
import os
import platform
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


CPUINFO = (  # a stand-in /proc/cpuinfo: two cores of a Xeon, with the flags given
    "processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse sse2 avx avx2 avx512f avx512_bf16 {flags}\n\n"
)


@pytest.mark.parametrize(
    ("flags", "precision"),
    [("amx_bf16 amx_tile amx_int8", "mixed_bfloat16"), ("", "float32")],
    ids=["with-amx-bf16", "without"],
)
def test_precision_auto_picks_bfloat16_with_amx_bf16_units_and_float32_without(monkeypatch, flags, precision):
    """--precision auto (the default) as each script decides it from /proc/cpuinfo, here a stand-in: mixed_bfloat16
    on a CPU with AMX-BF16 units, float32 on one without (AVX-512's bfloat16 is not enough); the record names it."""
    import io

    import keras

    cpuinfo = "".join(CPUINFO.format(n=n, flags=flags) for n in range(2))
    real_isfile, real_open = os.path.isfile, open
    monkeypatch.setattr(os.path, "isfile", lambda path: path == "/proc/cpuinfo" or real_isfile(path))

    def stand_in_open(path, *args, **kwargs):
        return io.StringIO(cpuinfo) if path == "/proc/cpuinfo" else real_open(path, *args, **kwargs)

    policy = keras.mixed_precision.global_policy()
    try:
        for script in (train_cnn, train_dense):
            monkeypatch.setattr(script, "open", stand_in_open, raising=False)  # the script's own open()
            args = script.parse_args([])
            assert args.precision == "auto"
            keras.mixed_precision.set_global_policy("float32")
            assert script.choose_devices_and_precision(args)[1] == precision, script.__name__
            assert keras.mixed_precision.global_policy().name == precision, script.__name__
            assert script.environment()["cpu"] == f"Intel(R) Xeon(R) Platinum 8480+, {os.cpu_count()} cores"
    finally:
        keras.mixed_precision.set_global_policy(policy)


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
