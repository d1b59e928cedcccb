"""The data loader that each tutorial script carries (train_cnn.py, train_dense.py and compare.py each have their
own copy, so every copy is tested): every source, and every check on what it loads. The scripts read Keras or a
Keras-style .npz only: IDX files go through `get_mnist.py --from-idx` (tests/test_get_mnist.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mnist_npz

import compare
import train_cnn
import train_dense

LOADERS = {"train_cnn": train_cnn.load_data, "train_dense": train_dense.load_data, "compare": compare.load_data}
MNIST_SHA256 = {  # sha256 of each uint8 array's bytes: the real MNIST, in its published order
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
}


@pytest.fixture(params=list(LOADERS))
def load(request):
    return LOADERS[request.param]


def refused(load, path, message: str) -> None:
    """One 'error:' line (SystemExit: exit 1, no traceback) that names the problem."""
    with pytest.raises(SystemExit) as stop:
        load(str(path))
    text = str(stop.value)
    assert text.startswith("error: ") and "\n" not in text, text
    assert message.lower() in text.lower(), text


def test_real_mnist_loads_from_the_npz(load):
    import hashlib

    (x_train, y_train), (x_test, y_test) = load(str(mnist_npz()))
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8 and y_test.max() == 9
    assert hashlib.sha256(x_train.tobytes()).hexdigest() == MNIST_SHA256["x_train"]
    assert hashlib.sha256(x_test.tobytes()).hexdigest() == MNIST_SHA256["x_test"]


def test_a_folder_points_to_get_mnist_from_idx(load, idx_dir):
    """A folder (here: the four MNIST IDX files of a real slice) is not read: one line says how to convert it."""
    with pytest.raises(SystemExit) as stop:
        load(str(idx_dir))
    assert str(stop.value) == (
        f"error: {idx_dir}: a folder, not a .npz file; for the four MNIST IDX files in it, run "
        f"`python get_mnist.py --from-idx {idx_dir}`, then add --data data/mnist.npz"
    )


def test_other_mnist_format_datasets_work(load, tmp_path):
    """Not only MNIST: any 28×28 grayscale, 10-class data in the format loads (labels of any integer type)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "other.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        y_train=np.arange(30) % 10,
        x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        y_test=np.arange(10),
    )
    (_, y_train), (x_test, _) = load(str(path))
    assert y_train.dtype == np.uint8 and len(x_test) == 10


def npz_with(tmp_path, **overrides):
    arrays = {
        "x_train": np.zeros((20, 28, 28), np.uint8),
        "y_train": np.arange(20) % 10,
        "x_test": np.zeros((10, 28, 28), np.uint8),
        "y_test": np.arange(10),
    }
    arrays.update(overrides)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_test": None}, "y_test is not a file in the archive"),
        ({"x_train": np.zeros((20, 28, 28), np.float32)}, "dtype float32; expected (N, 28, 28) uint8"),
        ({"x_train": np.zeros((20, 784), np.uint8)}, "x_train has shape (20, 784)"),
        ({"x_test": np.zeros((10, 32, 32), np.uint8)}, "x_test has shape (10, 32, 32)"),
        ({"y_train": np.arange(20) % 10 + 5}, "labels from 5 to 14, expected 0-9"),
        ({"y_train": -(np.arange(20) % 10)}, "labels from -9"),
        ({"y_train": np.arange(19) % 10}, "20 train images but 19 train labels"),
        ({"y_test": np.zeros((10, 1), np.uint8)}, "labels (shape (10, 1)"),
        ({"y_test": np.linspace(0, 9, 10)}, "dtype float64); expected one whole number 0-9 per image"),
        ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)}, "x_test has shape (0, 28, 28)"),
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
def test_bad_npz_is_refused(load, tmp_path, overrides, message):
    refused(load, npz_with(tmp_path, **overrides), message)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"hello", "not a keras-style .npz"), (b"", "no data left in file")],
    ids=["text", "empty"],
)
def test_not_an_npz_is_refused(load, tmp_path, content, message):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    refused(load, path, message)


def test_missing_path_is_refused(load, tmp_path):
    refused(load, tmp_path / "nowhere.npz", "nowhere.npz: no such file or directory")


def test_npz_with_pickled_objects_is_not_unpickled(load, tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(
        path,
        x_train=np.array([object()] * 3, dtype=object),
        y_train=np.arange(3),
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=np.arange(1),
    )
    refused(load, path, "allow_pickle=False")


def test_offline_download_names_the_offline_route(load, monkeypatch):
    import keras

    def offline():
        raise OSError("URL fetch failure: no internet")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(SystemExit) as stop:
        load(None)
    assert str(stop.value) == (
        "error: could not download MNIST (URL fetch failure: no internet); offline, run `python get_mnist.py` "
        "and add --data data/mnist.npz"
    )


def test_the_three_copies_are_the_same_code():
    """Each script carries its own loader, by design (each is a single file); they must not drift apart."""
    import inspect

    sources = {name: inspect.getsource(loader) for name, loader in LOADERS.items()}
    assert len(set(sources.values())) == 1


def test_train_size_larger_than_data_is_refused(mnist):
    from mnistlab import UserError

    with pytest.raises(UserError, match="--train-size 60001 is larger than the 60000"):
        mnist.first(60001)
    assert len(mnist.first(100).x_train) == 100
