"""Constant-memory builds: peak RSS and wall time vs count, and webdataset images/s vs the encoder alone.

    .venv/bin/python benchmarks/scale_build.py embeddings --sizes 100000 1000000
    .venv/bin/python benchmarks/scale_build.py webdataset --images 1024 --pairs 5 --profile

`embeddings`: for each N, writes a synthetic clip-retrieval folder (`img_emb/img_emb_K.npy` float16
[rows, 1280] + `metadata/metadata_K.parquet`, `--rows-per-file` rows a file, generated chunk by
chunk), then runs `ovi_stats.build.build_from_source_embeddings` (the code `ovi build-stats DIR
--from-embeddings` runs) in a fresh process with a flat index, sampling its RSS every 20 ms. It
reports the peak RSS while streaming (reading, float64 moments, float16 copy, keys and metadata:
what must not grow with N) and the peak of the whole build (the index phase adds the index itself,
4 N D bytes for flat: what `--index-memory` budgets), and the wall time. The moments are then
checked against numpy (float64 `mean`, `cov`) on a store built from the first file alone.

`webdataset`: renders `--images` toy-world images (`ovi_plugins.toy.dataset`) into img2dataset
shards (JPEG + caption + json; `--image-size` resizes them first, as img2dataset does), then times,
with the shipped toy encoder or (`--random-encoder small|bigg`: ViT-B/32, ViT-bigG-14) a randomly
initialised image tower of that CLIP's size (`--threads` torch threads), (a) the encoder alone on the same images
already decoded and preprocessed
(`encode_pixels`, batch 64) and (b) `build_stats` on the shards (`--workers` decoding processes,
batch 64), alternated `--pairs` times (A B A B ...: a pair's two halves see the same load), and
prints each pair's images/s, its ratio b/a (goal >= 0.9) and the median ratio, for the whole build
and for its steady state (first batch folded in to the last: no worker start-up, no store writing). `--profile` first
prints the CPU time an image of each stage (tar reading, JPEG decode, preprocessing, encoder),
which does not depend on the machine's load. The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_layout(root: Path, n: int, dim: int, rows_per_file: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    for k, lo in enumerate(range(0, n, rows_per_file)):
        rows = min(rows_per_file, n - lo)
        out = np.lib.format.open_memmap(root / "img_emb" / f"img_emb_{k}.npy", mode="w+", dtype=np.float16,
                                        shape=(rows, dim))
        for i in range(0, rows, 20_000):
            m = min(20_000, rows - i)
            x = centres[rng.integers(0, 64, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
            out[i : i + m] = x.astype(np.float16)
        out.flush()
        del out
        pq.write_table(pa.table({"image_path": [f"{k:05d}/{lo + i:09d}.jpg" for i in range(rows)],
                                 "caption": [f"caption {lo + i}" for i in range(rows)]}),
                       root / "metadata" / f"metadata_{k}.parquet")


CHILD = r'''
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from ovi_cli.reporter import Reporter
from ovi_plugins.sources import ClipRetrievalSource
from ovi_stats.build import build_from_source_embeddings

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

peak = {"stream": 0, "all": 0}
phase = {"name": "stream"}
stop = threading.Event()
def sample():
    while not stop.is_set():
        r = rss()
        peak["all"] = max(peak["all"], r)
        if phase["name"] == "stream":
            peak["stream"] = max(peak["stream"], r)
        time.sleep(0.02)

class Rep(Reporter):
    def start(self, label, total):
        self.total, self.done = total, 0
    def advance(self, done=1, info=""):
        self.done += done
        if self.done >= self.total:
            phase["name"] = "index"; peak["stream_s"] = time.perf_counter() - t0

base = rss()
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
store = build_from_source_embeddings(ClipRetrievalSource(sys.argv[2]), sys.argv[3],
                                     {"source": "synthetic", "fingerprint": "x"},
                                     dim=int(sys.argv[4]), index="flat", reporter=Rep())
wall = time.perf_counter() - t0
stop.set()
print(json.dumps({"count": store.count, "wall_s": wall, "stream_s": peak.get("stream_s"), "rss_before": base,
                  "peak_stream": peak["stream"], "peak_all": peak["all"]}))
'''


def run_embeddings(args) -> list[dict]:
    out = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            layout = Path(tmp) / "cr"
            t0 = time.perf_counter()
            write_layout(layout, n, args.dim, args.rows_per_file)
            print(f"N={n}: layout written in {time.perf_counter() - t0:.0f} s", flush=True)
            res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(layout), str(Path(tmp) / "store"),
                                  str(args.dim)], capture_output=True, text=True)
            if res.returncode:
                raise SystemExit(res.stderr[-2000:])
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["moments_check"] = check_moments(layout, Path(tmp), args.dim)
            out.append(row)
            print(f"N={n}: wall {row['wall_s']:.0f} s (streaming {row['stream_s']:.0f} s), peak RSS streaming "
                  f"{row['peak_stream'] / 2**20:.0f} MiB, whole build {row['peak_all'] / 2**20:.0f} MiB "
                  f"(index flat {4 * n * args.dim / 2**20:.0f} MiB); moments vs numpy on "
                  f"{row['moments_check']['rows']} rows: max |mean diff| {row['moments_check']['mean']:.1e}, "
                  f"max |cov diff| {row['moments_check']['cov']:.1e}", flush=True)
    return out


def check_moments(layout: Path, tmp: Path, dim: int) -> dict:
    """A store from the first file alone against numpy's float64 mean and covariance of its rows."""
    from ovi_plugins.sources import ClipRetrievalSource
    from ovi_stats.build import build_from_source_embeddings

    one = tmp / "one"
    (one / "img_emb").mkdir(parents=True)
    (one / "metadata").mkdir()
    os.link(layout / "img_emb" / "img_emb_0.npy", one / "img_emb" / "img_emb_0.npy")
    os.link(layout / "metadata" / "metadata_0.parquet", one / "metadata" / "metadata_0.parquet")
    store = build_from_source_embeddings(ClipRetrievalSource(str(one)), tmp / "one-store",
                                         {"source": "synthetic", "fingerprint": "x"}, dim=dim, index="flat")
    x = np.load(one / "img_emb" / "img_emb_0.npy").astype(np.float64)
    return {"rows": len(x), "mean": float(np.abs(store.moments().mean - x.mean(0)).max()),
            "cov": float(np.abs(np.asarray(store.cov) - np.cov(x.T)).max())}


def write_shards(shards: Path, n: int, per_tar: int, size: int | None = None) -> list:
    """`n` toy-world images as img2dataset tars of `per_tar` samples (JPEG q90 + caption + json); the PIL
    images. `size`: resized (bicubic) to size x size first, as img2dataset resizes (its default is 256)."""
    from PIL import Image

    from ovi_plugins.toy.dataset import iter_scenes, render

    images, tar = [], None
    for i, scene in enumerate(iter_scenes(n, seed=0)):
        if i % per_tar == 0:
            tar = tarfile.open(shards / f"{i // per_tar:05d}.tar", "w")
        buf = io.BytesIO()
        im = render(scene)
        if size:
            im = im.resize((size, size), Image.BICUBIC)
        im.save(buf, format="JPEG", quality=90)
        images.append(im)
        for suffix, data in (("jpg", buf.getvalue()), ("txt", scene.caption.encode()),
                             ("json", json.dumps({"key": f"{i:09d}"}).encode())):
            info = tarfile.TarInfo(f"{i:09d}.{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if i % per_tar == per_tar - 1 or i == n - 1:
            tar.close()
    return images


def profile_stages(shards: Path, enc, n: int) -> dict:
    """CPU seconds an image of each stage of a build, one after the other in this process (one thread).

    CPU time (`time.process_time`), not wall time: what each stage costs does not depend on what else
    the machine runs. Stages: reading the tars into samples (webdataset's tar iterator), JPEG decode
    (`load_rgb`), preprocessing (the encoder's image processor, batches of 64), the encoder (batches of 64).
    """
    import torch

    from ovi_plugins.sources import WebdatasetSource
    from ovi_stats.images import load_rgb

    src = WebdatasetSource(str(shards))
    cost = {}
    t = time.process_time()
    samples = [s for u in src.units() for s in src.samples(u)]
    cost["tar_read"] = time.process_time() - t
    t = time.process_time()
    images = [load_rgb(s.image, getattr(enc, "image_size", None)) for s in samples]
    cost["jpeg_decode"] = time.process_time() - t
    t = time.process_time()
    pixels = [enc.image_processor(images=images[i : i + 64], return_tensors="pt")["pixel_values"]
              for i in range(0, len(images), 64)]
    cost["preprocess"] = time.process_time() - t
    t = time.process_time()
    with torch.no_grad():
        for p in pixels:
            enc.encode_pixels(p)
    cost["encode"] = time.process_time() - t
    ms = {k: 1000 * v / n for k, v in cost.items()}
    print("CPU ms an image: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items())
          + f"; decoding side (tar + decode + preprocess) {ms['tar_read'] + ms['jpeg_decode'] + ms['preprocess']:.2f}"
          + f" vs encoder {ms['encode']:.2f}", flush=True)
    return {"cpu_ms_per_image": {k: round(v, 3) for k, v in ms.items()}}


def random_encoder(folder: Path, size: str) -> Path:
    """An encoder folder whose image tower has a real CLIP's size and random weights (throughput does not
    depend on the weights): `benchmarks/build_stats_speed.py`'s builder."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from build_stats_speed import make_encoder_repo

    return make_encoder_repo(folder, size)


def run_webdataset(args) -> dict:
    import torch

    from ovi_cli.encoders import Encoders
    from ovi_plugins.sources import WebdatasetSource
    from ovi_stats.build import build_stats

    torch.set_num_threads(args.threads)
    out: dict = {"images": args.images, "per_tar": args.per_tar, "workers": args.workers, "threads": args.threads,
                 "image_size": args.image_size, "encoder": args.random_encoder or "toy",
                 "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = (random_encoder(Path(tmp) / "encoder", args.random_encoder) if args.random_encoder
                  else ROOT / "plugins" / "toy" / "models" / "prior")
        enc = Encoders.load(str(folder), device="cpu")
        shards = Path(tmp) / "shards"
        shards.mkdir()
        images = write_shards(shards, args.images, args.per_tar, args.image_size)
        print(f"{args.images} images in {len(list(shards.iterdir()))} tars; load {os.getloadavg()}", flush=True)
        if args.profile:
            out["profile"] = profile_stages(shards, enc, args.images)
        pixels = [enc.image_processor(images=images[i : i + 64], return_tensors="pt")["pixel_values"]
                  for i in range(0, len(images), 64)]
        pairs = []
        for rep in range(args.pairs):  # A B A B ...: both halves of a pair see the same machine load
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.no_grad():
                for p in pixels:
                    enc.encode_pixels(p)
            enc_s, enc_cpu = time.perf_counter() - t0, time.process_time() - c0
            t0, c0, folded = time.perf_counter(), time.process_time(), []
            res = build_stats(WebdatasetSource(str(shards)), Path(tmp) / f"s{rep}", enc, batch_size=64,
                              workers=args.workers, checkpoint_seconds=60,
                              on_batch=lambda b, folded=folded: folded.append(time.perf_counter()))
            build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
            assert res.store.count == args.images
            # steady state: from the first batch folded in to the last (no worker start-up, no store writing)
            steady = (args.images - 64) / (folded[-1] - folded[0])
            pairs.append({"encoder_only_img_s": args.images / enc_s, "build_img_s": args.images / build_s,
                          "ratio": enc_s / build_s, "steady_build_img_s": steady,
                          "steady_ratio": steady * enc_s / args.images, "load": os.getloadavg()[0],
                          "main_cpu_ms_per_image": {"encoder_only": 1000 * enc_cpu / args.images,
                                                    "build": 1000 * build_cpu / args.images}})
            print(f"pair {rep}: encoder alone {args.images / enc_s:.0f} img/s, build-stats on shards "
                  f"{args.images / build_s:.0f} img/s, ratio {enc_s / build_s:.2f}, steady state "
                  f"{steady:.0f} img/s, ratio {steady * enc_s / args.images:.2f} (load {os.getloadavg()[0]:.2f}; "
                  f"main process CPU ms an image {1000 * enc_cpu / args.images:.2f} vs "
                  f"{1000 * build_cpu / args.images:.2f})",
                  flush=True)
    ratios, steady = [p["ratio"] for p in pairs], [p["steady_ratio"] for p in pairs]
    out.update(pairs=pairs, ratios=[round(r, 3) for r in ratios], median_ratio=round(float(np.median(ratios)), 3),
               steady_ratios=[round(r, 3) for r in steady], median_steady_ratio=round(float(np.median(steady)), 3),
               load_after=os.getloadavg())
    print(f"median ratio over {len(ratios)} pairs: {out['median_ratio']:.2f} whole build, "
          f"{out['median_steady_ratio']:.2f} steady state (goal >= 0.9); ratios {out['ratios']}, "
          f"steady {out['steady_ratios']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["embeddings", "webdataset"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--rows-per-file", type=int, default=100_000)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--per-tar", type=int, default=256, help="samples a tar")
    ap.add_argument("--pairs", type=int, default=5, help="encoder-alone / build pairs, alternated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the encoding process")
    ap.add_argument("--profile", action="store_true", help="first, CPU ms an image of each stage")
    ap.add_argument("--image-size", type=int, default=None,
                    help="webdataset: resize the toy images to this many pixels a side (img2dataset's default is 256)")
    ap.add_argument("--random-encoder", choices=["small", "bigg"], default=None,
                    help="webdataset: a randomly initialised image tower of a real CLIP's size (small: ViT-B/32, "
                    "bigg: ViT-bigG-14) instead of the toy one (build_stats_speed.py's towers)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if args.mode == "embeddings":
        print(json.dumps({"benchmark": "scale_build", "mode": "embeddings", "dim": args.dim,
                          "results": run_embeddings(args)}))
    else:
        print(json.dumps({"benchmark": "scale_build", "mode": "webdataset", **run_webdataset(args)}))


if __name__ == "__main__":
    main()
