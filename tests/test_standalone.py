"""The three tutorial scripts are single files: each imports only Keras/TensorFlow, NumPy, matplotlib and the
standard library, runs when copied alone into an empty folder, and runs where the POSIX-only modules are missing
(as on Windows)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, data_flags, wait_for_epochs

SCRIPTS = ("train_cnn.py", "train_dense.py", "compare.py")
ALLOWED = {"keras", "tensorflow", "numpy", "matplotlib"}
SLICE = ["--train-size", "2000", "--epochs", "2", "--batch-size", "64"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_imports_only_the_framework_and_the_standard_library(script):
    tree = ast.parse((ROOT / script).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) <= ALLOWED, imported - set(sys.stdlib_module_names)
    assert "sys.path" not in (ROOT / script).read_text()


def run_alone(folder, script, *args, wrapper: str = ""):
    """Run ``folder/script`` from ``folder``, as a learner who copied it there would; ``wrapper`` is Python code
    run first, in the same process."""
    runner = f"{wrapper}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    return subprocess.run(
        [sys.executable, "-c", runner, script, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def check_a_copy_alone(folder, wrapper: str = "") -> None:
    for script in SCRIPTS:
        shutil.copy(ROOT / script, folder)
    for script in ("train_cnn.py", "train_dense.py"):
        result = run_alone(folder, script, *SLICE, *data_flags(), wrapper=wrapper)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    result = run_alone(folder, "compare.py", *data_flags(), wrapper=wrapper)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fewer errors" in result.stdout or "fewer errors here" in result.stdout, result.stdout[-2000:]
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["cnn.keras", "dense.keras"]
    assert {"cnn_run.json", "dense_run.json", "comparison.png", "comparison.json", "runs.jsonl"} <= {
        p.name for p in (folder / "results").iterdir()
    }
    rows = json.loads((folder / "results" / "comparison.json").read_text())["models"]
    assert rows["cnn"]["test_accuracy"] > 0.9 and rows["dense"]["test_accuracy"] > 0.85, rows


def test_each_script_runs_copied_alone_into_an_empty_folder(tmp_path):
    """No mnistlab/, no other script, no sys.path: the default models/ and results/ appear beside the copies."""
    check_a_copy_alone(tmp_path)


# As on Windows: the POSIX-only modules cannot be imported and there is no SIGHUP; msvcrt stands in for the locks
# (a stand-in with Windows' behaviour: a byte-range lock that refuses with an OSError while another process holds it).
AS_ON_WINDOWS = textwrap.dedent("""
    import fcntl as posix_fcntl, signal, subprocess, sys, types  # subprocess first: it tells Windows by msvcrt
    for name in ("resource", "fcntl", "pwd", "grp", "termios"):
        sys.modules[name] = None
    del signal.SIGHUP
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_NBLCK = 2
    msvcrt.locking = lambda fd, mode, size: posix_fcntl.flock(fd, posix_fcntl.LOCK_EX | posix_fcntl.LOCK_NB)
    sys.modules["msvcrt"] = msvcrt
""")


def test_each_script_runs_without_the_posix_only_modules(tmp_path):
    check_a_copy_alone(tmp_path, wrapper=AS_ON_WINDOWS)


def test_two_runs_at_once_are_refused_with_the_windows_lock(tmp_path):
    """The second run of a script into one models folder refuses in one line, through the msvcrt lock."""
    shutil.copy(ROOT / "train_dense.py", tmp_path)
    runner = (
        f"{AS_ON_WINDOWS}\nimport runpy, sys\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
    )
    args = ["--train-size", "3000", "--epochs", "30", "--batch-size", "32", *data_flags()]
    first = subprocess.Popen(
        [sys.executable, "-c", runner, "train_dense.py", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_epochs(tmp_path / "models" / ".resume-dense", 1, first)
        second = run_alone(tmp_path, "train_dense.py", *args, wrapper=AS_ON_WINDOWS)
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 1, second.stderr[-2000:]
    line = second.stderr.strip().splitlines()[-1]
    assert line == (
        f"error: another training run of dense (PID {first.pid}) is writing to models; wait for it to finish, or "
        "give this run another --models-dir"
    ), line
