"""What the `nn` constraint adds to an OVI step, measured in the engine's own loop.

    .venv/bin/python benchmarks/nn_overhead.py --shape vit-b-32 --batch 8 --sizes 10000,100000
    python3 benchmarks/nn_overhead.py --device cuda --shape vit-bigG-14 --batch 8 --sizes 118287

For each store size N (random embeddings, dim `--dim` 1280 like COCO under Kandinsky 2.2's CLIP,
stored float16 like a real store) the engine (`ovi_cli.engine.optimize`, `--dtype auto`) runs
`--steps` steps of a random tower of `--shape` three ways, alternately, `--repeats` times (fastest
of each counts): without a constraint, with `nn` searching on the device (`device-matmul`: the
exact matmul search of `ovi_stats.matmul_search`), and with `nn` searching a faiss flat index on the
host (`faiss-flat`, skipped when faiss is not installed). Overhead = (seconds with nn - seconds
without) / steps, also as a fraction of the plain step. Every step searches (`--nn-every 1`).
The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ovi_speed  # noqa: E402

from ovi_cli.api import ConstraintContext  # noqa: E402
from ovi_cli.devices import resolve_dtype  # noqa: E402
from ovi_cli.engine import optimize  # noqa: E402
from ovi_cli.pseudo_tokens import ovi_forward  # noqa: E402
from ovi_cli.settings import OviSettings  # noqa: E402


class ArrayStore:
    """The parts of an `ovi_stats.store.StatsStore` the nn constraint reads, over an in-memory array."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = embeddings
        self.count, self.dim = embeddings.shape
        self.files = [f"img{i:07d}" for i in range(self.count)]
        self.index_params = {"type": "flat"}
        self._index = None

    def iter_embeddings(self, chunk: int = 65_536):
        for i in range(0, self.count, chunk):
            yield np.asarray(self.embeddings[i : i + chunk])

    def search(self, queries: np.ndarray, k: int):
        from ovi_stats.index import build_index, search

        if self._index is None:
            self._index, _ = build_index(self.iter_embeddings, self.count, self.dim, kind="flat")
        return search(self._index, queries, k)


class _Enc:
    def __init__(self, dim: int) -> None:
        self.embed_dim = dim


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="vit-b-32", choices=sorted(ovi_speed.SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dim", type=int, default=1280, help="store dimension (the tower's projection is set to it)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-faiss", action="store_true")
    args = ap.parse_args(argv)
    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    device = torch.device(args.device)
    hidden, layers, heads, mlp, image, patch, _, act = ovi_speed.SHAPES[args.shape]
    ovi_speed.SHAPES["_nn"] = (hidden, layers, heads, mlp, image, patch, args.dim, act)  # projection = store dim
    width = hidden
    dtype = resolve_dtype("auto", device, ovi_token_width=width)
    model = ovi_speed.build_tower("_nn", device, torch.float32 if device.type == "cpu" else dtype)
    forward = ovi_forward(model, dtype)
    gen = torch.Generator().manual_seed(0)
    targets = torch.randn(args.batch, args.dim, generator=gen)
    seeds = list(range(args.batch))
    settings = OviSettings(tokens=6, steps=args.steps, schedule="paper")
    try:
        import faiss  # noqa: F401

        have_faiss = not args.no_faiss
    except ImportError:
        have_faiss = False
    print(f"# {args.shape} (projection {args.dim}), batch {args.batch}, {args.steps} steps, {str(dtype)[6:]}, "
          f"device {ovi_speed.describe_machine(device)}; faiss {'yes' if have_faiss else 'no'}", flush=True)

    from ovi_plugins.constraints import NearestNeighborConstraint

    def run(constraint) -> float:
        ovi_speed._sync(device)
        t = time.perf_counter()
        optimize(forward, targets, token_width=width, seeds=seeds, settings=settings,
                 constraints=[constraint] if constraint else [], device=device, dtype=dtype)
        ovi_speed._sync(device)
        return time.perf_counter() - t

    rows = []
    t0 = time.perf_counter()
    for n in [int(s) for s in args.sizes.split(",")]:
        rng = np.random.default_rng(n)
        emb = np.empty((n, args.dim), dtype=np.float16)
        for i in range(0, n, 65_536):
            emb[i : i + 65_536] = rng.standard_normal((min(65_536, n - i), args.dim), dtype=np.float32)
        store = ArrayStore(emb)
        variants = {"none": None}
        t = time.perf_counter()
        ctx = ConstraintContext(encoders=_Enc(args.dim), device=device, dtype=dtype, store=store,
                                options={"k": 1, "every": 1, "search": "matmul"}, weight=0.5)
        variants["device-matmul"] = NearestNeighborConstraint(ctx)
        setup_matmul = time.perf_counter() - t
        setup_faiss = None
        if have_faiss:
            t = time.perf_counter()
            store.search(emb[:1].astype(np.float32), 1)  # builds the flat index
            setup_faiss = time.perf_counter() - t
            ctx = ConstraintContext(encoders=_Enc(args.dim), device=device, dtype=dtype, store=store,
                                    options={"k": 1, "every": 1, "search": "faiss"}, weight=0.5)
            variants["faiss-flat"] = NearestNeighborConstraint(ctx)
        for c in variants.values():
            run(c)  # warm-up
        best = {k: float("inf") for k in variants}
        for _ in range(max(1, args.repeats)):
            for k, c in variants.items():
                best[k] = min(best[k], run(c))
        base = best["none"] / args.steps
        row = {"n": n, "dim": args.dim, "step_ms": base * 1000, "setup_s": {"device-matmul": setup_matmul,
                                                                             "faiss-flat": setup_faiss}}
        for k in variants:
            if k == "none":
                continue
            over = best[k] / args.steps - base
            row[k] = {"step_ms": best[k] / args.steps * 1000, "overhead_ms": over * 1000,
                      "overhead_fraction": over / base}
            print(f"N={n:>8}  {k:<14} step {best[k] / args.steps * 1000:8.1f} ms vs {base * 1000:8.1f} ms without: "
                  f"+{over * 1000:7.2f} ms = {100 * over / base:6.1f}% per step", flush=True)
        rows.append(row)
        del variants, store, emb
    out = {"shape": args.shape, "batch": args.batch, "steps": args.steps, "device": ovi_speed.describe_machine(device),
           "dtype": str(dtype)[6:], "rows": rows, "seconds_total": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
