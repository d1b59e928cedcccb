"""`make` on an interpreter that cannot run the pinned requirements: one line saying what to do, not pip's errors;
and the browser tests' own setup: Chromium missing is a skip on a laptop, a failure in CI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import INSTALL_CHROMIUM, ROOT, find_chromium, mnist_npz

REFUSAL = "error: needs Python 3.11-3.13, found 3.10.13; install one and run: make PYTHON=python3.11"
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str, folder: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(folder), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,  # each target here only checks, lists or removes: seconds
    )


def python_310_stand_in(folder: Path) -> Path:
    """An executable that answers `-c CODE` as Python 3.10.13 would: this interpreter, with ``sys.version`` and
    ``sys.version_info`` saying 3.10.13 before CODE runs. All that the Makefile's check asks of an interpreter."""
    path = folder / "python3.10"
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import sys
            if sys.argv[1:2] != ["-c"]:
                sys.exit(f"this stand-in for Python 3.10 only runs -c CODE, not {sys.argv[1:]}")
            code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
            sys.version = "3.10.13 (a stand-in) [the test's interpreter underneath]"
            sys.version_info = (3, 10, 13, "final", 0)
            exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
            """
        )
    )
    path.chmod(0o755)
    return path


@needs_make
def test_supported_python_passes_the_check():
    result = make("check-python", f"PYTHON={sys.executable}")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_make
def test_python_310_stand_in_is_refused_with_what_to_do_before_any_venv(tmp_path):
    """On every machine: the refusal of `make check-python`, and of `make setup` before it makes a venv."""
    stand_in = python_310_stand_in(tmp_path)
    asked = [stand_in, "-c", "import sys; print(sys.version_info[:2])"]
    says = subprocess.run(asked, capture_output=True, text=True, check=False, timeout=60)
    assert says.stdout.strip() == "(3, 10)", says  # what the check will see
    result = make("check-python", f"PYTHON={stand_in}")
    assert result.returncode != 0
    assert REFUSAL in result.stderr.splitlines() and "Traceback" not in result.stderr, result.stderr
    venv = tmp_path / "venv"
    result = make("setup", f"PYTHON={stand_in}", f"VENV={venv}")
    assert result.returncode != 0 and REFUSAL in result.stderr.splitlines(), result.stdout + result.stderr
    assert not venv.exists()  # refused before `python -m venv` and pip


@needs_make
def test_missing_interpreter_is_named():
    result = make("check-python", "PYTHON=python3.99-not-here")
    assert result.returncode != 0
    assert "error: python3.99-not-here not found" in result.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- make all and make clean, in a copy of the project ------------------------------------------------------------
def a_copy_to_make_in(folder: Path) -> list[str]:
    """The Makefile and the requirements in ``folder``, a stand-in for an installed .venv (its stamp newer than the
    requirements, its python this one) and MNIST where DATA says: make installs and downloads nothing there. Returns
    the variables to give make."""
    an_hour_ago = time.time() - 3600
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, folder)
        os.utime(folder / name, (an_hour_ago, an_hour_ago))
    venv = folder / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".installed").touch()
    return [f"VENV={venv}", f"DATA={mnist_npz()}"]


@needs_make
@pytest.mark.parametrize("saved", [(), ("cnn",), ("cnn", "dense")], ids=["none", "cnn", "both"])
def test_make_all_skips_a_network_that_is_already_saved(tmp_path, saved):
    """`make all` trains each network whose model is not saved yet, then compares (make -n: what it would run)."""
    variables = a_copy_to_make_in(tmp_path)
    (tmp_path / "models").mkdir()
    for name in saved:
        (tmp_path / "models" / f"{name}.keras").write_bytes(b"a saved model")
    result = make("-n", "all", *variables, folder=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    python = variables[0].removeprefix("VENV=") + "/bin/python"
    commands = [line.split()[1] for line in result.stdout.splitlines() if line.startswith(python)]
    trains = [f"train_{name}.py" for name in ("cnn", "dense") if name not in saved]
    assert commands == [*trains, "compare.py"], result.stdout
    assert "pip" not in result.stdout and "venv" not in commands and "get_mnist.py" not in result.stdout


@needs_make
def test_make_clean_keeps_the_run_log(tmp_path):
    """`make clean` removes the saved models, figures, JSON records and the report, and keeps results/runs.jsonl
    (one line for every run there has been) and data/: the very files, untouched (same inode, bytes and mtime), and
    anything else a learner put there."""
    venv = a_copy_to_make_in(tmp_path)[0]
    variables = [venv, "DATA=data/mnist.npz"]  # the copy's own data/, where `make data` puts it
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mnist_npz(), data / "mnist.npz")
    (data / "my-digits.npz").write_bytes(b"a learner's own file")
    an_hour_ago = time.time() - 3600
    for path in data.iterdir():
        os.utime(path, (an_hour_ago, an_hour_ago))
    before = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, digest(path)) for path in data.iterdir()}
    models, results = tmp_path / "models", tmp_path / "results"
    models.mkdir()
    results.mkdir()
    made = [models / "cnn.keras", models / "dense.keras", results / "cnn_run.json", results / "comparison.json"]
    made += [results / "comparison.png", results / "exp_spatial.png", results / "report.html"]
    for path in made:
        path.write_bytes(b"made by a run")
    (results / "runs.jsonl").write_text('{"name": "cnn"}\n{"name": "dense"}\n')
    result = make("clean", *variables, folder=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [path.name for path in made if path.exists()] == []
    assert sorted(p.name for p in results.iterdir()) == ["runs.jsonl"]
    assert (results / "runs.jsonl").read_text() == '{"name": "cnn"}\n{"name": "dense"}\n'
    after = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, digest(path)) for path in data.iterdir()}
    assert after == before, sorted(after)


# --- the browser tests' Chromium -----------------------------------------------------------------------------
def fake_programs(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


def outcome(**where) -> BaseException:
    """What find_chromium raises when something is missing: pytest's skip or its failure, caught to be checked (a
    skip that escaped would skip this test instead of failing it)."""
    try:
        find_chromium(**where)
    except (pytest.skip.Exception, pytest.fail.Exception) as raised:
        return raised
    raise AssertionError(f"find_chromium found everything in {where}")


@pytest.mark.parametrize(("driver", "missing"), [(True, "chromium and chromedriver"), (False, "chromium")])
def test_chromium_missing_is_a_skip_on_a_laptop_and_a_one_line_failure_in_ci(tmp_path, monkeypatch, driver, missing):
    empty = str(fake_programs(tmp_path / "bin"))
    monkeypatch.delenv("CI", raising=False)
    skipped = outcome(driver=driver, search_path=empty)
    assert isinstance(skipped, pytest.skip.Exception), skipped
    assert str(skipped).startswith(f"{missing} not found;") and INSTALL_CHROMIUM in str(skipped), skipped
    monkeypatch.setenv("CI", "true")
    failed = outcome(driver=driver, search_path=empty)
    assert isinstance(failed, pytest.fail.Exception), f"under CI=true: {failed!r}"
    assert str(failed).startswith(f"{missing} not found, and CI=true") and "\n" not in str(failed), failed
    assert "apt-get install chromium chromium-driver" in str(failed)
    assert failed.pytrace is False  # the line alone, not the helper's traceback


def test_chromium_and_its_driver_are_found_on_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    folder = fake_programs(tmp_path / "bin", "chromium-browser", "chromedriver")
    found = find_chromium(driver=True, search_path=str(folder))
    assert found == (str(folder / "chromium-browser"), str(folder / "chromedriver"))
    assert find_chromium(driver=False, search_path=str(folder)) == (str(folder / "chromium-browser"), None)
    (folder / "chromedriver").unlink()
    failed = outcome(driver=True, search_path=str(folder))
    assert isinstance(failed, pytest.fail.Exception) and str(failed).startswith("chromedriver not found, and CI=true")


@needs_make
def test_make_all_installs_what_a_learner_needs_and_make_test_the_tools_too(tmp_path):
    """On a fresh clone (no .venv): `make all` installs requirements.txt alone; the test tools, Jupyter's and the
    linter come with `make test` (requirements-dev.txt). make -n: what each would run."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy(ROOT / name, tmp_path)
    variables = [f"PYTHON={sys.executable}", f"VENV={tmp_path / 'venv'}", f"DATA={mnist_npz()}"]
    installs = {}
    for goal in ("all", "test"):
        result = make("-n", goal, *variables, folder=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        installs[goal] = [line.split(" -r ")[1] for line in lines if "pip install" in line and " -r " in line]
    assert installs == {"all": ["requirements.txt"], "test": ["requirements.txt", "requirements-dev.txt"]}, installs
