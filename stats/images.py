"""Finding images in a folder and decoding them robustly to RGB.

Every problem with a single file becomes a `BadImage` with a short reason; nothing here lets a
broken file crash a build. Files are recognised by extension (case ignored); the decoder then
trusts the content, so a JPEG named `.png` is decoded as the JPEG it is, while a text file named
`.png` is reported as "not an image".
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


class BadImage(Exception):
    """A file that cannot be used as an image; `str(exc)` is the reason shown to the user."""


def find_images(root: str | os.PathLike) -> list[str]:
    """Image files under `root`, recursively, as sorted POSIX paths relative to `root`.

    Hidden files and folders (names starting with '.') are not visited; symlinked folders are
    not followed (symlinked files are).
    """
    root = Path(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            found.append((rel / name).as_posix())
    found.sort()
    return found


def _high_bit_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit single-channel images to 8-bit grayscale (full range preserved)."""
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        if np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr, nan=0.0)
        out = np.clip(arr, 0, 255)
    else:
        arr = arr.astype(np.float64)
        peak = 65535.0 if (im.mode.startswith("I;16") or arr.max() > 255) else 255.0
        out = np.clip(arr, 0, peak) * (255.0 / peak)
    return Image.fromarray(np.round(out).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image) -> Image.Image:
    """`.convert("RGB")` semantics (alpha dropped, palette expanded, CMYK converted), plus 16-bit."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_bit_depth_to_l(im)
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise BadImage(f"unsupported image mode {im.mode}") from exc


KEEP = 4  # a reduced image keeps its shorter side >= KEEP x the encoder's input size


def reduce_factor(width: int, height: int, min_side: int) -> int:
    """The largest integer factor that keeps the shorter side at least `KEEP * min_side` (1 = keep).

    KEEP = 4 was measured (docs/reliability.md): on a sharp 12000-pixel image the embedding of the
    reduced decode has cosine 0.9997 to the full decode's (0.94 with 2).
    """
    return max(1, min(width, height) // (KEEP * min_side))


def _decode_reduced(im: Image.Image, min_side: int | None) -> Image.Image:
    """`im` decoded to RGB, at a reduced size when it is much larger than `min_side` needs.

    JPEG decodes directly at 1/2, 1/4 or 1/8 scale (`draft`); other formats decode in full, then
    shrink by an integer factor (`reduce`, box filter) before anything else holds them, so a batch
    keeps only small images whatever the files' sizes (the encoder resizes to `min_side` anyway).
    """
    factor = reduce_factor(im.width, im.height, min_side) if min_side else 1
    if factor > 1 and im.format == "JPEG" and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
        im.draft(im.mode, (im.width // factor, im.height // factor))
    im.load()
    rgb = to_rgb(im)
    factor = reduce_factor(rgb.width, rgb.height, min_side) if min_side else 1
    return rgb.reduce(factor) if factor > 1 else rgb


def load_rgb(path: str | os.PathLike | bytes, min_side: int | None = None) -> Image.Image:
    """Decode the (first frame of the) image at `path` (or in these encoded bytes) to an RGB PIL
    image, or raise `BadImage`.

    `min_side`: the encoder's input size; a much larger image is decoded at a reduced size whose
    shorter side stays at least `KEEP` times that (see `_decode_reduced`).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        size, opened = len(path), io.BytesIO(path)
    else:
        try:
            size, opened = os.path.getsize(path), path
        except OSError as exc:
            raise BadImage(f"cannot read: {exc.strerror or exc.__class__.__name__}") from exc
    if size == 0:
        raise BadImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency, EXIF and similar notes
            with Image.open(opened) as im:
                if im.width < 1 or im.height < 1:
                    raise BadImage("image has no pixels")
                return _decode_reduced(im, min_side)
    except BadImage:
        raise
    except UnidentifiedImageError as exc:
        raise BadImage("not an image (format not recognised)") from exc
    except Image.DecompressionBombError as exc:
        raise BadImage("too many pixels (decompression bomb guard)") from exc
    except MemoryError as exc:
        raise BadImage("too large to decode") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, EOFError, struct.error, ... from codecs
        msg = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise BadImage(f"truncated ({msg})") from exc
        raise BadImage(f"corrupt ({msg})") from exc
