"""Synthetic shapes: scenes of one or two plain-coloured shapes, their captions, and splits.

A *scene* is a background plus one or two `Shape`s. Everything is drawn with PIL from a
`numpy.random.Generator`, so a seed gives the same images on every machine.

Held-out split: the colour-shape pairs in `HELD_OUT_PAIRS` never appear in a training image
(each colour and each shape still appears in training, in other pairs). The held-out split holds
scenes with at least one of those pairs: prompts built from them are combinations the toy models
have never seen.

Caption conventions: two objects are captioned left to right ("a blue square and a green triangle"
means the square is on the left) and always have different colours.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (128, 0, 128),
    "orange": (255, 165, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZES: dict[str, tuple[float, float]] = {"small": (6.0, 9.0), "large": (13.0, 17.0)}
POSITIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # name: ((x range), (y range)) of the centre, as fractions of the image side
    "left": ((0.22, 0.32), (0.3, 0.7)),
    "right": ((0.68, 0.78), (0.3, 0.7)),
    "top": ((0.3, 0.7), (0.22, 0.32)),
    "bottom": ((0.3, 0.7), (0.68, 0.78)),
}
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "star"), ("blue", "triangle"), ("purple", "circle"), ("orange", "square")}
)
SPLITS = ("train", "heldout")


@dataclass
class Shape:
    colour: str
    shape: str
    cx: float
    cy: float
    r: float  # half the shape's extent in pixels
    size: str | None = None  # "small" / "large" when the caption names it
    position: str | None = None  # "left" / ... when the caption names it


@dataclass
class Scene:
    shapes: list[Shape]
    background: tuple[int, int, int]
    gradient: tuple[float, float, float]  # per-channel change from top to bottom
    noise_seed: int
    caption: str = ""
    split: str = "train"
    objects: list[tuple[str, str]] = field(default_factory=list)  # (colour, shape), left to right
    noise_std: float = 3.0  # pixel noise of the background and shapes

    def to_json(self) -> dict:
        return {"caption": self.caption, "split": self.split,
                "objects": [list(o) for o in self.objects],
                "shapes": [asdict(s) for s in self.shapes]}


# ---- geometry -------------------------------------------------------------------------------
def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a triangle (apex up), square or five-pointed star (point up), unrotated."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "star":
        inner = r * 0.42
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else inner
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a) + r * 0.1))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene: tinted grey background with a vertical gradient and mild noise, then shapes."""
    rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    bg = np.asarray(scene.background, np.float32)[None, None, :] + rows * np.asarray(scene.gradient, np.float32)
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise_std, (size, size, 3)).astype(np.float32)
    arr = np.clip(np.broadcast_to(bg, (size, size, 3)) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        fill = COLOURS[s.colour]
        if s.shape == "circle":
            draw.ellipse([s.cx - s.r, s.cy - s.r, s.cx + s.r, s.cy + s.r], fill=fill)
        else:
            draw.polygon(shape_polygon(s.shape, s.cx, s.cy, s.r), fill=fill)
    return img


# ---- sampling -------------------------------------------------------------------------------
def _pairs(split: str) -> list[tuple[str, str]]:
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    if split == "train":
        return [p for p in all_pairs if p not in HELD_OUT_PAIRS]
    return sorted(HELD_OUT_PAIRS)


def _background(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    grey = float(rng.uniform(95, 235))
    tint = rng.uniform(-12, 12, 3)
    base = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
    gradient = tuple(float(g) for g in rng.uniform(-20, 20, 3) * (rng.random() < 0.5))
    return base, gradient  # type: ignore[return-value]


def sample_scene(rng: np.random.Generator, split: str = "train", size: int = IMAGE_SIZE) -> Scene:
    """One random scene of `split` with its caption (see the module docstring for conventions)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    bg, grad = _background(rng)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    train_pairs = _pairs("train")
    if rng.random() < 0.5:  # one shape
        if split == "train":
            colour, shape = train_pairs[int(rng.integers(len(train_pairs)))]
        else:
            held = _pairs("heldout")
            colour, shape = held[int(rng.integers(len(held)))]
        size_word = None if rng.random() < 0.5 else ("small", "large")[int(rng.integers(2))]
        r = float(rng.uniform(*SIZES[size_word or ("small", "large")[int(rng.integers(2))]]))
        pos_word = None if rng.random() < 0.5 else list(POSITIONS)[int(rng.integers(len(POSITIONS)))]
        if pos_word is None:
            margin = r + 2
            cx, cy = (float(rng.uniform(margin, size - margin)) for _ in range(2))
        else:
            (x0, x1), (y0, y1) = POSITIONS[pos_word]
            cx, cy = float(rng.uniform(x0, x1) * size), float(rng.uniform(y0, y1) * size)
            cx, cy = float(np.clip(cx, r + 1, size - r - 1)), float(np.clip(cy, r + 1, size - r - 1))
        shp = Shape(colour, shape, cx, cy, r, size_word, pos_word)
        words = ["a"] + ([size_word] if size_word else []) + [colour, shape]
        if pos_word:
            words += ["on", "the", pos_word]
        caption = " ".join(words)
        return Scene([shp], bg, grad, noise_seed, caption, split, [(colour, shape)])
    # two shapes, left and right halves, different colours
    while True:
        if split == "train":
            a = train_pairs[int(rng.integers(len(train_pairs)))]
            b = train_pairs[int(rng.integers(len(train_pairs)))]
        else:  # at least one held-out pair, on either side
            held = _pairs("heldout")
            a = held[int(rng.integers(len(held)))]
            b = [(c, s) for c in COLOURS for s in SHAPES][int(rng.integers(len(COLOURS) * len(SHAPES)))]
            if rng.random() < 0.5:
                a, b = b, a
        if a[0] != b[0]:
            break
    shapes = []
    for k, (colour, shape) in enumerate((a, b)):
        r = float(rng.uniform(8.0, 12.5))
        cx = float(rng.uniform(r + 1, size / 2 - r - 1)) + k * size / 2
        cy = float(rng.uniform(r + 2, size - r - 2))
        shapes.append(Shape(colour, shape, cx, cy, r))
    caption = f"a {a[0]} {a[1]} and a {b[0]} {b[1]}"
    return Scene(shapes, bg, grad, noise_seed, caption, split, [a, b])


def split_seed(seed: int, split: str) -> int:
    """Train and held-out scenes come from independent streams of the same seed."""
    return seed * 2 + SPLITS.index(split)


def iter_scenes(n: int, split: str = "train", seed: int = 0) -> Iterator[Scene]:
    rng = np.random.default_rng(split_seed(seed, split))
    for _ in range(n):
        yield sample_scene(rng, split)


def make_arrays(n: int, split: str = "train", seed: int = 0) -> tuple[np.ndarray, list[Scene]]:
    """`n` rendered scenes as uint8 `[n, 64, 64, 3]` plus the scenes (captions, objects)."""
    scenes = list(iter_scenes(n, split, seed))
    arr = np.stack([np.asarray(render(s)) for s in scenes]) if scenes else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3))
    return arr.astype(np.uint8), scenes


# ---- prompts --------------------------------------------------------------------------------
def heldout_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct held-out prompts, alternating single shapes and two-object binding prompts.

    Single: "a purple circle", "a small purple circle" (12 in all); two objects: "a red star and a
    green circle" (at least one pair of each prompt is held out; the two colours differ).
    """
    rng = np.random.default_rng(10_000 + seed)
    singles = [f"a {c} {s}" for c, s in sorted(HELD_OUT_PAIRS)]
    singles += [f"a {size} {c} {s}" for size in SIZES for c, s in sorted(HELD_OUT_PAIRS)]
    all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
    doubles = []
    for a in sorted(HELD_OUT_PAIRS):
        for b in all_pairs:
            if a[0] != b[0]:
                doubles.append(f"a {a[0]} {a[1]} and a {b[0]} {b[1]}")
                doubles.append(f"a {b[0]} {b[1]} and a {a[0]} {a[1]}")
    doubles = sorted(set(doubles))
    order = rng.permutation(len(doubles))
    doubles = [doubles[i] for i in order]
    out: list[str] = []
    si = di = 0
    while len(out) < n and (si < len(singles) or di < len(doubles)):
        if (len(out) % 2 == 0 and si < len(singles)) or di >= len(doubles):
            out.append(singles[si])
            si += 1
        else:
            out.append(doubles[di])
            di += 1
    return out


def parse_prompt(prompt: str) -> list[tuple[str, str]]:
    """The (colour, shape) objects a toy prompt asks for, left to right; words it does not know are ignored."""
    words = prompt.lower().replace(",", " ").split()
    objects = []
    colour = None
    for w in words:
        if w in COLOURS:
            colour = w
        elif w.rstrip("s") in SHAPES and colour is not None:
            objects.append((colour, w.rstrip("s")))
            colour = None
    return objects


# ---- writing a dataset folder -----------------------------------------------------------------
def write_dataset(out: Path, n: int, *, heldout: int | None = None, seed: int = 0,
                  on_progress=None) -> dict:
    """Write `n` training and `heldout` held-out PNGs plus `metadata.jsonl`, atomically.

    Layout: `OUT/train/00000.png`, `OUT/heldout/00000.png`, `OUT/metadata.jsonl` (one JSON object
    per image: file, split, caption, objects, shapes) and `OUT/dataset.json` (counts, seed, held-out pairs).
    The folder appears complete or not at all (written to a temporary sibling, then renamed).
    """
    from ovi_cli.errors import OviError
    from ovi_cli.outputs import install_dir, json_text, new_file, private_dir, write_errors

    out = Path(out)
    heldout = max(1, n // 5) if heldout is None else heldout
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OviError(f"dataset folder {str(out)!r} exists and is not empty")
    tmp = private_dir(out)
    try:
        total = n + heldout
        done = 0
        with write_errors(tmp / "metadata.jsonl"), new_file(tmp / "metadata.jsonl") as meta:
            for split, count in (("train", n), ("heldout", heldout)):
                (tmp / split).mkdir()
                for i, scene in enumerate(iter_scenes(count, split, seed)):
                    name = f"{split}/{i:05d}.png"
                    with write_errors(tmp / name), new_file(tmp / name) as f:
                        render(scene).save(f, format="PNG")
                    meta.write((json.dumps({"file": name, **scene.to_json()}) + "\n").encode("utf-8"))
                    done += 1
                    if on_progress is not None:
                        on_progress(done, total)
        info = {"format": "ovi-toy-shapes", "version": 1, "seed": seed, "image_size": IMAGE_SIZE,
                "counts": {"train": n, "heldout": heldout},
                "held_out_pairs": [list(p) for p in sorted(HELD_OUT_PAIRS)],
                "colours": COLOURS, "shapes": list(SHAPES)}
        with write_errors(tmp / "dataset.json"), new_file(tmp / "dataset.json") as f:
            f.write(json_text(info, tmp / "dataset.json").encode("utf-8"))
        install_dir(tmp, out)  # replaces an empty folder there
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def scene_for_objects(objects: list[tuple[str, str]], rng: np.random.Generator, size: int = IMAGE_SIZE) -> Scene:
    """A real scene showing `objects` (one, or two left to right), drawn like the dataset's scenes."""
    bg, grad = _background(rng)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    shapes = []
    if len(objects) == 1:
        r = float(rng.uniform(SIZES["small"][0], SIZES["large"][1]))
        cx, cy = (float(rng.uniform(r + 2, size - r - 2)) for _ in range(2))
        shapes.append(Shape(objects[0][0], objects[0][1], cx, cy, r))
    else:
        half = size / len(objects)
        for k, (colour, shape) in enumerate(objects):
            r = float(rng.uniform(8.0, min(12.5, half / 2 - 2)))
            cx = float(rng.uniform(r + 1, half - r - 1)) + k * half
            cy = float(rng.uniform(r + 2, size - r - 2))
            shapes.append(Shape(colour, shape, cx, cy, r))
    caption = " and ".join(f"a {c} {s}" for c, s in objects)
    return Scene(shapes, bg, grad, noise_seed, caption, "heldout", list(objects))


CANONICAL_BACKGROUND = (200, 200, 200)


def canonical_scene(objects: list[tuple[str, str]], size: int = IMAGE_SIZE, *,
                    background: tuple[int, int, int] = CANONICAL_BACKGROUND,
                    gradient: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Scene:
    """The decoder's target layout for `objects`: one shape centred, two side by side, no pixel noise.

    The toy CLIP's 64-d embedding says well *what* is shown but only roughly *where* and how big;
    a decoder trained with a pixel loss to reproduce the exact images averages those over into
    blur, so the toy decoder is trained to draw this canonical layout instead (README, "Try it offline").
    `background` and `gradient` default to plain grey; the decoder's training passes each image's
    own, which its CLIP embedding carries and its caption never names (see `TrainConfig.decoder_background`).
    """
    shapes = []
    if len(objects) == 1:
        shapes.append(Shape(objects[0][0], objects[0][1], size / 2, size / 2, 14.0))
    else:
        half = size / len(objects)
        for k, (colour, shape) in enumerate(objects):
            shapes.append(Shape(colour, shape, half * (k + 0.5), size / 2, 11.0))
    caption = " and ".join(f"a {c} {s}" for c, s in objects)
    return Scene(shapes, background, gradient, 0, caption, "canonical", list(objects), 0.0)
