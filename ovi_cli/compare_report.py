"""`ovi compare`'s report: the numbers of a comparison (recomputed from embeddings), its CSV
and summary tables, and the labelled grid image. Pure given the embeddings and the store.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ovi_cli.losses import cosine, mahalanobis_sq


# ---- the numbers -------------------------------------------------------------------------------
def comparison_rows(
    labels: Sequence[str],
    embeds: Tensor,
    text_embeds: Tensor,
    seconds: Sequence[float] | None = None,
    store: Any | None = None,
) -> list[dict[str, Any]]:
    """Per prior: cosine to the text, to every prior's embedding, norm, seconds, and with a store
    the Mahalanobis distance `sqrt((e - mu)^T P (e - mu))` and the best nearest-neighbour cosine.

    `embeds` `[N, D]` (row i = `labels[i]`), `text_embeds` `[D]` or `[1, D]`. Pure given the store.
    """
    e = embeds.detach().float().cpu()
    t = text_embeds.detach().float().cpu().reshape(1, -1)
    n = e.shape[0]
    text_cos = cosine(e, t.expand(n, -1)).tolist()
    pair = cosine(e.unsqueeze(1), e.unsqueeze(0)).tolist()  # [N, N]
    norms = e.norm(dim=-1).tolist()
    maha: list[float | None] = [None] * n
    nn_cos: list[float | None] = [None] * n
    nn_file: list[str | None] = [None] * n
    if store is not None:
        mean = torch.as_tensor(np.asarray(store.mean), dtype=torch.float64)
        chol = torch.as_tensor(np.asarray(store.precision_cholesky), dtype=torch.float64)
        maha = mahalanobis_sq(e.double(), mean, chol).clamp_min(0).sqrt().tolist()
        _, ids = store.search(np.ascontiguousarray(e.numpy(), dtype=np.float32), 1)
        ids = np.asarray(ids, dtype=np.int64)[:, 0]
        stored = torch.from_numpy(np.asarray(store.embeddings[ids], dtype=np.float32))
        nn_cos = cosine(e, stored).tolist()  # exact, from the raw stored embedding
        files = store.files
        nn_file = [str(files[int(i)]) for i in ids]
    rows = []
    for i, label in enumerate(labels):
        rows.append({
            "prior": label,
            "text_cosine": text_cos[i],
            "cosine": {labels[j]: pair[i][j] for j in range(n)},
            "mahalanobis": maha[i],
            "nn_cosine": nn_cos[i],
            "nn_file": nn_file[i],
            "norm": norms[i],
            "seconds": None if seconds is None else float(seconds[i]),
        })
    return rows


def table_columns(labels: Sequence[str], with_store: bool, preference: Sequence[str] = ()) -> list[str]:
    """The CSV columns; `preference`: the scorers of `--preference`, one column each (after the store's)."""
    cols = ["prior", "text_cosine", *[f"cos_{lab}" for lab in labels]]
    if with_store:
        cols += ["mahalanobis", "nn_cosine", "nn_file"]
    return cols + list(preference) + ["norm", "seconds"]


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row with its `cosine` as `cos_<prior>` columns and its `preference` scores as `<scorer>` columns."""
    flat = {k: v for k, v in row.items() if k not in ("cosine", "preference")}
    for other, v in row.get("cosine", {}).items():
        flat[f"cos_{other}"] = v
    flat.update(row.get("preference") or {})
    return flat


def table_csv(
    rows: Sequence[dict[str, Any]], labels: Sequence[str], with_store: bool, extra: Sequence[str] = (),
    preference: Sequence[str] = (),
) -> str:
    cols = [*extra, *table_columns(labels, with_store, preference)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = flatten_row(row)
        writer.writerow({k: _csv_value(flat.get(k)) for k in cols})
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def summary_rows(tables: Sequence[Sequence[dict[str, Any]]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Means over prompts, per prior, of every numeric column (None where no prompt has a value)."""
    out = []
    for label in labels:
        rows = [r for table in tables for r in table if r["prior"] == label]
        flat = [flatten_row(r) for r in rows]
        keys = [k for k in flat[0] if k not in ("prior", "nn_file")] if flat else []
        mean: dict[str, Any] = {"prior": label, "prompts": len(rows)}
        for k in keys:
            vals = [f[k] for f in flat if isinstance(f.get(k), (int, float)) and not isinstance(f.get(k), bool)]
            mean[k] = float(np.mean(vals)) if vals else None
        cos = {lab: mean.pop(f"cos_{lab}", None) for lab in labels}
        mean["cosine"] = cos
        scorers = list(dict.fromkeys(n for r in rows for n in r.get("preference") or {}))
        if scorers:
            mean["preference"] = {n: mean.pop(n, None) for n in scorers}
        out.append(mean)
    return out


# ---- the grid ----------------------------------------------------------------------------------
def label_band(height: int) -> int:
    """Height in pixels of the label strip under each image."""
    return max(14, round(height * 0.08))


def grid_size(count: int, width: int, height: int) -> tuple[int, int]:
    """(width, height) of a grid of `count` images of `width x height`, one row, labels below."""
    return count * width, height + label_band(height)


def make_grid(images: Sequence[Any], labels: Sequence[str]) -> Any:
    """One row of images, each with its label underneath (PIL)."""
    from PIL import Image, ImageDraw, ImageFont

    if not images:
        raise ValueError("no images for the grid")
    w, h = images[0].size
    band = label_band(h)
    grid = Image.new("RGB", grid_size(len(images), w, h), "white")
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=max(8, band - 4))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (im, label) in enumerate(zip(images, labels)):
        grid.paste(im.convert("RGB").resize((w, h)), (i * w, 0))
        text = label
        while text and draw.textlength(text, font=font) > w - 4:
            text = text[:-1]
        draw.text((i * w + 2, h + 1), text, fill="black", font=font)
    return grid


def png_with_text(image: Any, path: Path, text: dict[str, str]) -> None:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    image.save(path, format="PNG", pnginfo=info)
