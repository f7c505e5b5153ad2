"""Folder walk and robust decoding: every odd-but-valid image decodes, every broken one is a BadImage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_stats.images import BadImage, find_images, load_rgb


def _png_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _rgb(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def make_zoo(root: Path) -> tuple[list[str], dict[str, str]]:
    """Write valid images of many modes/formats and broken files under `root`.

    Returns (relative paths of the valid images, {relative path of a broken file: reason keyword}).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    good: dict[str, Image.Image | bytes] = {
        "rgb.png": _rgb(0),
        "upper.JPG": _rgb(1),
        "sub/gray.png": _rgb(2).convert("L"),
        "sub/palette.gif": _rgb(3).convert("P", palette=Image.Palette.ADAPTIVE),
        "sub/rgba.png": _rgb(4).convert("RGBA"),
        "sub/deeper/cmyk.jpg": _rgb(5).convert("CMYK"),
        "sixteen.png": Image.fromarray(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50),
        "bilevel.bmp": _rgb(6).convert("1"),
        "la.png": _rgb(7).convert("LA"),
        "photo.webp": _rgb(8),
        "really_jpeg.png": _png_bytes(_rgb(9), "JPEG"),  # content wins over the extension
        "trans_palette.png": _rgb(10).convert("P", palette=Image.Palette.ADAPTIVE),
    }
    for rel, im in good.items():
        path = root / rel
        if isinstance(im, bytes):
            path.write_bytes(im)
        elif rel == "trans_palette.png":
            im.save(path, transparency=0)
        else:
            im.save(path)
    png = _png_bytes(_rgb(11, (64, 64)))
    jpeg = _png_bytes(_rgb(12, (64, 64)), "JPEG")
    broken = {
        "zero.png": (b"", "empty"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "sub/corrupt.png": (png[:60] + bytes(range(256)) * 4, "corrupt"),
        "text.png": (b"this is not an image, just text\n" * 10, "not an image"),
        "sub/deeper/notes.JPEG": (b"%PDF-1.4 pretending\n", "not an image"),
    }
    for rel, (data, _) in broken.items():
        (root / rel).write_bytes(data)
    (root / "readme.txt").write_text("ignored: not an image extension")
    (root / ".hidden").mkdir(exist_ok=True)
    _rgb(13).save(root / ".hidden" / "skipme.png")
    return sorted(good), {k: v[1] for k, v in broken.items()}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    good, broken = make_zoo(root)
    return root, good, broken


def test_find_images_recursive_case_insensitive_sorted(zoo):
    root, good, broken = zoo
    found = find_images(root)
    assert found == sorted(good + list(broken))
    assert "readme.txt" not in found and not any(f.startswith(".hidden") for f in found)


def test_every_valid_mode_decodes_to_rgb(zoo):
    root, good, _ = zoo
    for rel in good:
        im = load_rgb(root / rel)
        assert im.mode == "RGB", rel
        assert im.size == (40, 30), rel


def test_sixteen_bit_keeps_its_range(zoo):
    root, _, _ = zoo
    with Image.open(root / "sixteen.png") as raw:
        assert raw.mode.startswith("I")  # really a 16-bit file
    arr = np.asarray(load_rgb(root / "sixteen.png"))
    assert arr.min() == 0 and arr.max() == 233  # 1199 * 50 = 59950 -> round(59950 / 65535 * 255)
    assert (arr[..., 0] == arr[..., 1]).all()


@pytest.mark.parametrize("kind", ["zero.png", "truncated.png", "truncated.jpg", "sub/corrupt.png", "text.png",
                                  "sub/deeper/notes.JPEG"])
def test_broken_files_raise_badimage_with_reason(zoo, kind):
    root, _, broken = zoo
    with pytest.raises(BadImage) as info:
        load_rgb(root / kind)
    assert broken[kind] in str(info.value)


def test_missing_file_is_badimage(tmp_path):
    with pytest.raises(BadImage, match="cannot read"):
        load_rgb(tmp_path / "gone.png")
