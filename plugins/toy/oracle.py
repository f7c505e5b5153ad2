"""A programmatic judge of toy images, independent of CLIP: which coloured shapes are where.

It plays the role that BLIP-VQA / UniDet play in T2I-CompBench. Steps:
1. each pixel gets a colour name from its HSV hue if it is saturated and bright enough
   (backgrounds are greyish, so they stay unlabelled);
2. the pixels of each colour are split into 4-connected components; small ones are noise;
3. each component's shape is the template (circle, square, triangle, star, drawn exactly as the
   dataset draws them, fitted to the component's bounding box) with the highest IoU.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ovi_plugins.toy.dataset import SHAPES, shape_polygon

# hue bins in degrees: name, lower bound (inclusive); red wraps around 360
HUE_BINS: tuple[tuple[str, float], ...] = (
    ("red", 0.0), ("orange", 19.0), ("yellow", 50.0), ("green", 90.0), ("blue", 190.0),
    ("purple", 265.0), ("red", 335.0),
)
LABELS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
MIN_SATURATION = 0.5
MIN_VALUE = 0.3
MIN_AREA = 15


@dataclass
class Detection:
    colour: str
    shape: str
    cx: float
    cy: float
    area: int
    iou: float  # of the best shape template


def hsv(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1] of uint8/float RGB `[H, W, 3]`."""
    rgb = arr.astype(np.float64) / (255.0 if arr.dtype == np.uint8 else 1.0)
    mx = rgb.max(-1)
    mn = rgb.min(-1)
    d = mx - mn
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.where(d == 0, 1.0, d)
    h = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = np.where(d == 0, 0.0, h * 60.0)
    s = np.where(mx == 0, 0.0, d / np.where(mx == 0, 1.0, mx))
    return h % 360.0, s, mx


def colour_map(arr: np.ndarray) -> np.ndarray:
    """`[H, W]` int: index into `LABELS`, or -1 for background pixels."""
    h, s, v = hsv(arr)
    out = np.full(h.shape, -1, dtype=np.int64)
    fg = (s >= MIN_SATURATION) & (v >= MIN_VALUE)
    for k, (name, lo) in enumerate(HUE_BINS):
        hi = HUE_BINS[k + 1][1] if k + 1 < len(HUE_BINS) else 360.0
        out[fg & (h >= lo) & (h < hi)] = LABELS.index(name)
    return out


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, each as an `[n, 2]` array of (y, x)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue = deque([(int(y0), int(x0))])
        pts = []
        while queue:
            y, x = queue.popleft()
            pts.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(np.asarray(pts))
    return out


def _template(shape: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """A mask of `shape` drawn to fill the bounding box (x0, y0, x1, y1) (inclusive)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    img = Image.new("L", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=1)
    else:
        # draw the unit shape, then map its own bounding box onto the component's
        pts = shape_polygon(shape, 0.0, 0.0, 1.0)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax, bx, ay, by = min(xs), max(xs), min(ys), max(ys)
        draw.polygon([(x0 + (px - ax) / (bx - ax) * w - 0.5, y0 + (py - ay) / (by - ay) * h - 0.5)
                      for px, py in pts], fill=1)
    return np.asarray(img, dtype=bool)


def classify_shape(points: np.ndarray, size: tuple[int, int]) -> tuple[str, float]:
    """The template shape with the highest IoU against a component, and that IoU."""
    mask = np.zeros(size, dtype=bool)
    mask[points[:, 0], points[:, 1]] = True
    box = (int(points[:, 1].min()), int(points[:, 0].min()), int(points[:, 1].max()), int(points[:, 0].max()))
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        t = _template(shape, box, size)
        iou = float((t & mask).sum() / max(1, (t | mask).sum()))
        if iou > best_iou:
            best, best_iou = shape, iou
    return best, best_iou


def detect(image: Image.Image | np.ndarray, min_area: int = MIN_AREA) -> list[Detection]:
    """Coloured shapes in an image, left to right."""
    arr = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    labels = colour_map(arr)
    found = []
    for k, name in enumerate(LABELS):
        for pts in components(labels == k):
            if len(pts) < min_area:
                continue
            shape, iou = classify_shape(pts, labels.shape)
            found.append(Detection(name, shape, float(pts[:, 1].mean()), float(pts[:, 0].mean()), len(pts), iou))
    return sorted(found, key=lambda d: d.cx)


@dataclass
class Judgement:
    object_accuracy: float  # fraction of the asked objects found with the right colour AND shape
    colour_accuracy: float  # fraction of the asked colours found (any shape)
    exact: bool  # every asked object found and nothing else detected


def judge(image: Image.Image | np.ndarray, objects: list[tuple[str, str]]) -> Judgement:
    """Score an image against the (colour, shape) objects it should show."""
    dets = detect(image)
    if not objects:
        return Judgement(0.0, 0.0, False)
    pool = [(d.colour, d.shape) for d in dets]
    found = 0
    for obj in objects:
        if obj in pool:
            pool.remove(obj)
            found += 1
    colours = [d.colour for d in dets]
    colour_hits = sum(1 for c, _ in objects if c in colours)
    exact = found == len(objects) and not pool
    return Judgement(found / len(objects), colour_hits / len(objects), exact)


def dataset_accuracy(images: np.ndarray, object_lists: list[list[tuple[str, str]]]) -> float:
    """Fraction of dataset images whose detections match their true objects exactly."""
    hits = [judge(img, objs).exact for img, objs in zip(images, object_lists)]
    return float(np.mean(hits)) if hits else 0.0
