"""`ovi eval toy`: the paper's comparison at toy scale, scored by an oracle that is not CLIP.

For held-out prompts (single shapes and two-object attribute binding, all built on colour-shape
pairs no training image shows), every method makes one image per prompt with the toy encoder and
decoder, and each image is scored by:
- oracle object accuracy: fraction of the prompt's (colour, shape) objects found, colour and shape
  in the same blob (binding); oracle exact: all found and nothing else; colour accuracy;
- toy-CLIP score: cosine of the image's toy-CLIP embedding with the prompt's text embedding;
- FID on toy-CLIP image embeddings against real held-out images (Frechet distance of Gaussians);
- NN cosine: mean over images of the best cosine to the training images (the toy stats store).
A `real` row scores freshly rendered real images of the same prompts: the ceiling.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ovi_cli.outputs import atomic_outputs
from ovi_plugins.toy.dataset import heldout_prompts, make_arrays, parse_prompt, render, scene_for_objects
from ovi_plugins.toy.oracle import judge
from ovi_plugins.toy.preset import MODELS_DIR, toy_paths

COLUMNS = ("method", "oracle_object_acc", "oracle_exact", "oracle_colour_acc", "clip_score", "fid",
           "nn_cosine", "embed_text_cosine", "seconds")
DEFAULT_MAHALANOBIS_WEIGHTS = (0.003, 0.03, 1.0)


@dataclass
class Method:
    label: str
    prior: str
    constraints: list[str] = field(default_factory=list)


def default_methods(mahalanobis_weights: tuple[float, ...] = DEFAULT_MAHALANOBIS_WEIGHTS) -> list[Method]:
    out = [Method("textemb", "textemb"), Method("ovi", "ovi")]
    out += [Method(f"ovi+mahalanobis:{w:g}", "ovi", [f"mahalanobis:{w:g}"]) for w in mahalanobis_weights]
    out += [Method("ovi+nn", "ovi", ["nn"]), Method("toy-prior", "toy-prior")]
    return out


# ---- metrics (pure) ---------------------------------------------------------------------------
def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """`||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`, the FID formula, for PSD covariances."""
    s1 = _sqrt_psd(np.asarray(cov1, np.float64))
    inner = _sqrt_psd(s1 @ np.asarray(cov2, np.float64) @ s1)
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(inner))


def fid_of(features: np.ndarray, reference: np.ndarray) -> float:
    """FID between two feature sets `[N, D]` (sample covariances; N >= 2 each)."""
    f = np.asarray(features, np.float64)
    r = np.asarray(reference, np.float64)
    return frechet_distance(f.mean(0), np.cov(f, rowvar=False), r.mean(0), np.cov(r, rowvar=False))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(1)


# ---- the run --------------------------------------------------------------------------------
@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    prompts: list[str]
    files: dict[str, str]
    info: dict[str, Any]


def run_eval(
    out: Path,
    *,
    prompts: int = 24,
    steps: int = 300,
    seed: int = 0,
    models_dir: Path = MODELS_DIR,
    methods: list[Method] | None = None,
    reference_images: int = 500,
    grid_prompts: int = 8,
    log: Callable[[str], None] = lambda s: None,
) -> EvalResult:
    """Generate and score every method on `prompts` held-out prompts; write CSV, JSON and a grid PNG."""
    from ovi_cli.encoders import Encoders
    from ovi_cli.errors import OviError
    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.settings import GenSettings
    from ovi_stats.store import open_store

    torch.set_num_threads(1)
    if prompts < 2:
        raise OviError("--prompts must be >= 2 (FID needs two images per method)")
    if steps < 1:
        raise OviError("--steps must be >= 1")
    paths = toy_paths(Path(models_dir))
    if not paths["encoder"].is_dir():
        raise OviError(f"no toy models in {models_dir} (train them with `ovi toy train`)")
    methods = methods or default_methods()
    texts = heldout_prompts(prompts, seed)
    if len(texts) < prompts:
        raise OviError(f"only {len(texts)} distinct held-out prompts exist (--prompts)")
    objects = [parse_prompt(p) for p in texts]
    seeds = [seed + i for i in range(len(texts))]
    encoders = Encoders.load(str(paths["encoder"]), device="cpu")
    store = open_store(str(paths["stats"]))
    text_emb = encoders.encode_text(texts).text_embeds.numpy()

    ref_arr, _ = make_arrays(reference_images, "heldout", seed + 1)
    from PIL import Image

    ref_feats = encoders.encode_images([Image.fromarray(a) for a in ref_arr]).numpy()

    def score(label: str, images: list, embeds: np.ndarray | None, seconds: float) -> dict[str, Any]:
        feats = encoders.encode_images(images).numpy()
        judged = [judge(im, objs) for im, objs in zip(images, objects)]
        nn_cos, _ = store.search(feats.astype(np.float32), 1)
        return {
            "method": label,
            "oracle_object_acc": float(np.mean([j.object_accuracy for j in judged])),
            "oracle_exact": float(np.mean([j.exact for j in judged])),
            "oracle_colour_acc": float(np.mean([j.colour_accuracy for j in judged])),
            "clip_score": float(cosine_rows(feats, text_emb).mean()),
            "fid": fid_of(feats, ref_feats),
            "nn_cosine": float(np.mean(nn_cos[:, 0])),
            "embed_text_cosine": float(cosine_rows(embeds, text_emb).mean()) if embeds is not None else None,
            "seconds": seconds,
        }

    rows: list[dict[str, Any]] = []
    grid: list[tuple[str, list]] = []
    rng = np.random.default_rng(20_000 + seed)
    real = [render(scene_for_objects(o, rng)) for o in objects]
    rows.append(score("real (rendered)", real, None, 0.0))
    grid.append(("real (rendered)", real))
    log(f"real images: oracle {rows[-1]['oracle_object_acc']:.2f}")
    for m in methods:
        settings = GenSettings(
            prior=m.prior, decoder="toy", encoder_model=str(paths["encoder"]), decoder_model=str(paths["decoder"]),
            stats=str(paths["stats"]), constraints=list(m.constraints), steps=steps, height=64, width=64,
            device="cpu", seed=seed,
            options={"toy-prior": {"model": str(paths["prior"])}} if m.prior == "toy-prior" else {},
        )
        t = time.perf_counter()
        pipe = OviPipeline(settings, encoders=encoders)
        batch = pipe.embed(texts, seeds)
        images = pipe.decode(batch)
        seconds = time.perf_counter() - t
        rows.append(score(m.label, images, batch.image_embeds.numpy(), seconds))
        grid.append((m.label, images))
        r = rows[-1]
        log(f"{m.label}: oracle {r['oracle_object_acc']:.2f} clip {r['clip_score']:.3f} fid {r['fid']:.1f} "
            f"nn {r['nn_cosine']:.3f} ({seconds:.1f}s)")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"prompts": texts, "steps": steps, "seed": seed, "reference_images": reference_images,
            "models": str(models_dir), "encoder_fingerprint": encoders.fingerprint(),
            "methods": [m.__dict__ for m in methods]}
    files = {"csv": str(out / "toy_eval.csv"), "json": str(out / "toy_eval.json"),
             "grid": str(out / "toy_eval_grid.png")}
    with atomic_outputs() as staging:  # the three files land together, or none does
        staging.write_text(files["csv"], _csv_text(rows))
        staging.write_json(files["json"], {"rows": rows, **info})
        staging.write_with(files["grid"], lambda p: make_grid(grid, texts, grid_prompts).save(p, format="PNG"))
    return EvalResult(rows, texts, files, info)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def make_grid(rows: list[tuple[str, list]], prompts: list[str], columns: int = 8, cell: int = 64):
    """One row per method (label on the left), one column per prompt (first `columns` prompts)."""
    from PIL import Image, ImageDraw

    cols = min(columns, len(prompts))
    label_w, head_h = 130, 28
    grid = Image.new("RGB", (label_w + cols * (cell + 2), head_h + len(rows) * (cell + 2)), "white")
    draw = ImageDraw.Draw(grid)
    for j in range(cols):
        words = prompts[j].split()
        half = (len(words) + 1) // 2
        draw.text((label_w + j * (cell + 2), 2), " ".join(words[:half]), fill="black")
        draw.text((label_w + j * (cell + 2), 14), " ".join(words[half:]), fill="black")
    for i, (label, images) in enumerate(rows):
        y = head_h + i * (cell + 2)
        draw.text((4, y + cell // 2 - 6), label, fill="black")
        for j, im in enumerate(images[:cols]):
            grid.paste(im.convert("RGB").resize((cell, cell)), (label_w + j * (cell + 2), y))
    return grid


def format_row(r: dict[str, Any]) -> list[str]:
    def f(v, spec):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)

    return [r["method"], f(r["oracle_object_acc"], ".2f"), f(r["oracle_exact"], ".2f"),
            f(r["oracle_colour_acc"], ".2f"), f(r["clip_score"], ".3f"), f(r["fid"], ".2f"),
            f(r["nn_cosine"], ".3f"), f(r["embed_text_cosine"], ".3f"), f(r["seconds"], ".1f")]


__all__ = ["run_eval", "frechet_distance", "fid_of", "default_methods", "Method", "EvalResult"]
