"""`make` on an interpreter that cannot run the pinned requirements: one line saying what to do, not pip's errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

PYTHON_310 = Path("/root/.pyenv/versions/3.10.13/bin/python3")  # on this project's machines (pyenv)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_supported_python_passes_the_check():
    result = make("check-python", f"PYTHON={sys.executable}")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not PYTHON_310.is_file() or shutil.which("make") is None, reason="no Python 3.10 here to try")
def test_python_310_is_refused_with_what_to_do():
    result = make("check-python", f"PYTHON={PYTHON_310}")
    assert result.returncode != 0
    assert "error: needs Python 3.11-3.13, found 3.10.13; install one and run: make PYTHON=python3.11" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_missing_interpreter_is_named():
    result = make("check-python", "PYTHON=python3.99-not-here")
    assert result.returncode != 0
    assert "error: python3.99-not-here not found" in result.stderr
