"""How close does `ovi build-stats` get to the encoder's own speed?

Writes N synthetic JPEG photos to a temporary folder, then measures on the same images:

  encoder-only   images/s of `Encoders.encode_pixels` alone, on pixels decoded and preprocessed
                 beforehand (the ceiling: what the vision tower can do);
  build-stats    images/s of the whole `ovi_stats.build.build_stats` run: decoding and preprocessing
                 in worker processes, encoding, float64 moments, float16 rows on disk, and the
                 final store (Ledoit-Wolf, faiss index, atomic rename);

and prints build / encoder-only (goal >= 0.9). The encoder is a random CLIP vision tower of a
chosen size saved in the kandinsky-2-2-prior layout (no download), or --encoder-model PATH.

    .venv/bin/python benchmarks/build_stats_speed.py                       # small (ViT-B/32-sized), CPU
    .venv/bin/python benchmarks/build_stats_speed.py --model tiny --images 2000
    .venv/bin/python benchmarks/build_stats_speed.py --device cuda --model bigg --images 4096 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: the tiny encoder builder

# vision tower sizes: (hidden, intermediate, layers, heads, patch, image, projection)
SIZES = {
    "tiny": (32, 64, 2, 4, 8, 32, 16),  # the test suite's tower
    "small": (768, 3072, 12, 12, 32, 224, 512),  # ViT-B/32
    "bigg": (1664, 8192, 48, 16, 14, 224, 1280),  # ViT-bigG-14, Kandinsky 2.2's image encoder
}


def make_encoder_repo(root: Path, size: str) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from tests.helpers.tiny_models import make_encoder_repo as make_tiny

    make_tiny(root)  # tokenizer, text tower, image processor in the hub layout
    hidden, inter, layers, heads, patch, image, proj = SIZES[size]
    if size != "tiny":
        torch.manual_seed(0)
        cfg = CLIPVisionConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                               num_attention_heads=heads, patch_size=patch, image_size=image, projection_dim=proj)
        CLIPVisionModelWithProjection(cfg).eval().save_pretrained(root / "image_encoder")
        proc_path = root / "image_processor" / "preprocessor_config.json"
        proc = json.loads(proc_path.read_text())
        proc["crop_size"] = {"height": image, "width": image}
        proc["size"] = {"shortest_edge": image}
        proc_path.write_text(json.dumps(proc))
    return root


def make_images(folder: Path, n: int, width: int, height: int) -> None:
    """Smooth colour fields with noise, saved as JPEG (quality 90): photo-like decode cost."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack([np.sin(xx * a + i), np.cos(yy * b), np.sin((xx + yy) * c)], -1) * 100 + 128
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:06d}.jpg", quality=90)


def encoder_only(encoders, folder: Path, batch_size: int) -> float:
    from ovi_stats.images import find_images, load_rgb

    files = find_images(folder)
    batches = [encoders.preprocess([load_rgb(folder / f) for f in files[i : i + batch_size]])
               for i in range(0, len(files), batch_size)]
    encoders.encode_pixels(batches[0])  # warm-up
    sync(encoders.device)
    t = time.perf_counter()
    for px in batches:
        out = encoders.encode_pixels(px)
        out.cpu()
    sync(encoders.device)
    return len(files) / (time.perf_counter() - t)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--model", choices=sorted(SIZES), default="small")
    ap.add_argument("--encoder-model", help="a real encoder folder instead of a random tower")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="default: build-stats' own default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the best is reported")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ovi_cli.cli import quiet_libraries
    from ovi_cli.devices import resolve_device, resolve_dtype
    from ovi_cli.encoders import Encoders
    from ovi_stats.build import build_stats, default_workers

    quiet_libraries()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.encoder_model or str(make_encoder_repo(tmp / "encoder", args.model))
        encoders = Encoders.load(source, device=device, dtype=dtype)
        make_images(tmp / "images", args.images, args.width, args.height)
        workers = default_workers() if args.workers is None else args.workers

        enc_rates, build_rates = [], []
        for r in range(args.repeat):
            enc_rates.append(encoder_only(encoders, tmp / "images", args.batch_size))
            t = time.perf_counter()
            build_stats(tmp / "images", tmp / f"store{r}", encoders, batch_size=args.batch_size, workers=workers,
                        checkpoint_seconds=60.0)
            sync(device)
            build_rates.append(args.images / (time.perf_counter() - t))
        enc, build = max(enc_rates), max(build_rates)
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
              f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
        print(f"model {args.encoder_model or args.model}, dim {encoders.embed_dim}, images {args.images} "
              f"({args.width}x{args.height} JPEG), batch {args.batch_size}, workers {workers}, dtype {dtype}")
        print(f"encoder-only  {enc:9.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in enc_rates)})")
        print(f"build-stats   {build:9.1f} images/s   (runs: {', '.join(f'{x:.1f}' for x in build_rates)})")
        print(f"ratio build-stats / encoder-only = {build / enc:.3f}   (goal >= 0.9)")


if __name__ == "__main__":
    main()
