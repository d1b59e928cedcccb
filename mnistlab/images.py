"""Your own digit → an MNIST-style 28×28 image, prepared the way MNIST itself was made.

MNIST digits are white on black, size-normalised to fit a 20×20 box (keeping their aspect ratio) and centred
by their centre of mass in a 28×28 field. A photo or drawing only resembles the training data after the same
steps, so that is exactly what :func:`mnist_style` does.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mnistlab import UserError

MAX_PIXELS = 40_000_000  # larger than any photo a phone takes; refuses decompression bombs before decoding
DIGIT_BOX = 20  # MNIST fits each digit into 20×20 ...
FIELD = 28  # ... and centres it in 28×28
INK_THRESHOLD = 0.2  # fraction of the brightest ink level that counts as part of the digit


class ImageError(UserError):
    """An image file that cannot be classified (missing, not an image, empty, too large)."""


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """Open any PIL-readable image file as float grayscale 0–255, with one clear error for each way it can fail."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file; give the path of a PNG or JPEG image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: the file is empty; give a PNG or JPEG image of a digit")
    return decode_grayscale(path, source=str(path))


def decode_grayscale(image: str | os.PathLike[str] | BinaryIO, source: str) -> np.ndarray:
    """Decode an image (a path or a file-like object of bytes) as float grayscale 0–255.

    A transparent background counts as white paper: a browser canvas exports black ink on transparent.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(image) as opened:
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{source}: {width}×{height} pixels is too large (limit {MAX_PIXELS:,}); shrink the image first"
                    )
                if width == 0 or height == 0:
                    raise ImageError(f"{source}: the image has no pixels")
                picture = opened.convert("RGBA") if opened.mode in ("P", "LA", "RGBA", "PA") else opened
                if picture.mode == "RGBA":  # transparent background → white paper
                    background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
                    picture = Image.alpha_composite(background, picture)
                return np.asarray(picture.convert("L"), dtype=np.float64)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{source}: the image is too large to open safely; shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{source}: not an image PIL can read ({type(error).__name__}); use PNG or JPEG") from None


def mnist_style(gray: np.ndarray, source: str = "image") -> np.ndarray:
    """Grayscale (any size) → uint8 28×28, white digit on black, 20×20 box, centred by centre of mass."""
    # 1. Ink is bright, paper is dark: invert when the border (the paper) is lighter than the middle.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    ink = 255.0 - gray if np.median(border) > 127 else gray.copy()
    ink -= np.median(np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]))  # paper → 0
    ink = np.clip(ink, 0, None)
    if ink.max() <= 10:
        raise ImageError(f"{source}: no digit found (the image is blank)")
    ink = ink / ink.max() * 255.0

    # 2. Crop to the digit's bounding box.
    rows = np.flatnonzero((ink > INK_THRESHOLD * 255).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD * 255).any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    # 3. Fit into 20×20 keeping the aspect ratio (antialiased, like MNIST's original resampling).
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 255)

    # 4. Paste into 28×28 so that the centre of mass sits at the centre.
    field = np.zeros((FIELD, FIELD), dtype=np.float64)
    total = digit.sum()
    ys, xs = np.indices(digit.shape)
    centre_y, centre_x = (ys * digit).sum() / total, (xs * digit).sum() / total
    top = int(round(FIELD / 2 - centre_y))
    left = int(round(FIELD / 2 - centre_x))
    top = min(max(top, 0), FIELD - digit.shape[0])
    left = min(max(left, 0), FIELD - digit.shape[1])
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.rint(field).astype(np.uint8)


def load_digit(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file and prepare it like MNIST (see :func:`mnist_style`)."""
    return mnist_style(read_grayscale(path), source=str(path))


def shift(images: np.ndarray, pixels: int) -> np.ndarray:
    """Move every image ``pixels`` to the right and down, filling with black (nothing wraps around, nothing is
    recentred): the spatial experiment, and the shift control of serve.py's page."""
    out = np.zeros_like(images)
    out[:, pixels:, pixels:] = images[:, : images.shape[1] - pixels, : images.shape[2] - pixels]
    return out


def canvas_png(digit: np.ndarray, size: int = 280) -> bytes:
    """An MNIST digit as a browser canvas would export it: black ink on a transparent background, ``size`` px.

    The opposite of what the networks take (white on black, 28×28), so it exercises every preprocessing step.
    """
    ink = Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    picture = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    picture.putalpha(ink)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
