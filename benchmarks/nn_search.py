"""What the nearest-neighbour constraint costs per OVI step: faiss search vs one OVI step.

    .venv/bin/python benchmarks/nn_search.py                       # 100k and 1M vectors, dim 1280
    .venv/bin/python benchmarks/nn_search.py --sizes 100000 --shape tiny --batch 8

For each size N (random unit vectors, dim 1280 = Kandinsky 2.2's CLIP embedding) it builds the
index types of `ovi_stats.index` (flat = exact inner product; IVF-Flat with its `nlist`/`nprobe`;
HNSW with its M/efSearch) and the exact matmul search of the `nn` constraint's device path
(`ovi_stats.matmul_search.MatmulSearch`: one `[B, D] x [D, N]` float32 product + `torch.topk`,
on `--device`, over the same vectors), and times one search of `--batch` queries for k neighbours,
which is what the `nn` constraint does once per searched step. Flat faiss and the matmul search
are timed alternately (fastest of `--repeats` each), and their ids are compared. One OVI step (forward + backward of the
engine, `--dtype auto`) of a named random-weight tower shape is timed on this machine for
comparison. It prints the ratio search / step for `--nn-every 1` and the smallest `--nn-every`
(search every K steps, neighbours reused in between) that keeps the NN cost <= 10% of a step.

Random vectors have no cluster structure: they are the worst case for IVF/HNSW recall (real CLIP
embeddings cluster strongly); the recall@1 against the flat index is printed for honesty.
HNSW graphs over 1M vectors take a long time to build on a small CPU; `--hnsw-max` (default 100k)
skips larger builds and prints the search time extrapolated from the measured sizes (log N growth),
marked `extrapolated`. The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _index_params():
    """The store's own parameters when `ovi_stats.index` is there; the same numbers otherwise."""
    try:
        from ovi_stats import index as ix

        return {"hnsw_m": ix.HNSW_M, "ef_construction": ix.HNSW_EF_CONSTRUCTION, "ef_search": ix.HNSW_EF_SEARCH,
                "nprobe": ix.IVF_NPROBE, "flat_max": ix.FLAT_MAX, "source": "ovi_stats.index"}
    except Exception:  # pragma: no cover - the stats package is built in parallel
        return {"hnsw_m": 32, "ef_construction": 80, "ef_search": 128, "nprobe": 32, "flat_max": 200_000,
                "source": "defaults in this script"}


def random_unit(n: int, dim: int, seed: int, chunk: int = 65_536):
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x


def time_alternating(fns: dict, repeats: int, sync=lambda: None) -> dict[str, float]:
    """Fastest seconds of each zero-argument callable, calling them in turn `repeats` times."""
    for fn in fns.values():
        fn()  # warm
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def time_search(index, queries: np.ndarray, k: int, repeats: int) -> float:
    index.search(queries, k)  # warm
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        index.search(queries, k)
        best = min(best, time.perf_counter() - t)
    return best


def ovi_step_seconds(shape: str, batch: int, tokens: int, steps: int = 6) -> tuple[float, str]:
    """Fastest of a few engine steps (forward + backward + AdamW) for a random tower (a busy machine only slows)."""
    from ovi_speed import build_tower

    from ovi_cli.devices import resolve_dtype
    from ovi_cli.losses import cosine
    from ovi_cli.pseudo_tokens import init_pseudo_tokens, ovi_forward

    model = build_tower(shape, torch.device("cpu"))
    width = model.config.hidden_size
    dtype = resolve_dtype("auto", "cpu", ovi_token_width=width)
    forward = ovi_forward(model, dtype)  # the engine's tower (bf16 Linear weights where it runs bf16)
    p = init_pseudo_tokens(batch, tokens, width, list(range(batch))).requires_grad_(True)
    target = torch.randn(batch, model.config.projection_dim)
    opt = torch.optim.AdamW([p], lr=2e-2)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            e = forward(p)
        (1 - cosine(e, target)).sum().backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return float(min(times[1:])), str(dtype)[6:]


def ivf_rows(faiss, args, n, train_x, queries, recall_q, truth, params, rows) -> None:
    """IVF-Flat over the same vectors: search time and recall@1 at a few nprobe."""
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
    quant = faiss.IndexFlatIP(args.dim)
    ivf = faiss.IndexIVFFlat(quant, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.cp.niter = 10  # search cost does not depend on how well the centroids converged
    ivf.cp.min_points_per_centroid = 1
    ivf.train(train_x)
    for chunk in random_unit(n, args.dim, args.seed):
        ivf.add(chunk)
    build = time.perf_counter() - t
    for nprobe in sorted({8, params["nprobe"], 64}):
        ivf.nprobe = min(nprobe, nlist)
        s = time_search(ivf, queries, args.k, args.repeats)
        _, ids = ivf.search(recall_q, 1)
        rows.append({"n": n, "index": f"ivf(nlist={nlist},nprobe={ivf.nprobe})", "search_ms": s * 1000,
                     "build_s": build, "recall_at_1": float((ids[:, 0] == truth[:, 0]).mean())})


def main(argv: list[str] | None = None) -> dict:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--batch", type=int, default=8, help="queries per search = prompts per OVI batch")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--shape", default="vit-b-32", help="tower shape for the OVI step (see ovi_speed.py)")
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--step-seconds", type=float, default=0.0,
                    help="use this OVI step time instead of measuring one (e.g. a GPU step time)")
    ap.add_argument("--hnsw-max", type=int, default=100_000)
    ap.add_argument("--ivf-train", type=int, default=50_000, help="training sample for IVF k-means")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch and faiss threads (0: their defaults)")
    ap.add_argument("--device", default="cpu", help="device of the matmul search (faiss runs on the host)")
    ap.add_argument("--skip-ivf", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    params = _index_params()
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    if args.step_seconds > 0:
        step_s, step_dtype = args.step_seconds, "given"
    else:
        step_s, step_dtype = ovi_step_seconds(args.shape, args.batch, args.tokens)
    print(f"# OVI step ({args.shape}, batch {args.batch}, {step_dtype}): {step_s * 1000:.1f} ms; "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; index params from {params['source']}",
          flush=True)
    queries = next(random_unit(args.batch, args.dim, args.seed + 999))
    recall_q = next(random_unit(256, args.dim, args.seed + 998))  # recall@1 over 256 queries
    rows = []
    hnsw_measured: list[tuple[int, float]] = []
    for n in sizes:
        flat = faiss.IndexFlatIP(args.dim)
        t = time.perf_counter()
        train = []
        for chunk in random_unit(n, args.dim, args.seed):
            flat.add(chunk)
            if sum(len(c) for c in train) < args.ivf_train:
                train.append(chunk[: args.ivf_train])
        build = time.perf_counter() - t
        train_x = np.concatenate(train)[: args.ivf_train]
        _, truth = flat.search(recall_q, 1)
        # the matmul search over the same (already unit) vectors: a zero-copy view on the CPU
        from ovi_stats.matmul_search import MatmulSearch

        xb = torch.from_numpy(faiss.rev_swig_ptr(flat.get_xb(), n * args.dim).reshape(n, args.dim))
        t = time.perf_counter()
        ms = MatmulSearch(xb.to(args.device))
        sync = (lambda: torch.cuda.synchronize()) if ms.device.type == "cuda" else (lambda: None)
        sync()
        copy_s = time.perf_counter() - t
        q_dev = torch.from_numpy(queries).to(ms.device)

        def matmul_step(ms=ms, q=q_dev):  # search + the neighbour vectors, all on the device
            _, ids = ms.search(q, args.k)
            return ms.vectors(ids)

        best = time_alternating({"flat": lambda flat=flat: flat.search(queries, args.k), "matmul": matmul_step},
                                args.repeats, sync)
        _, mids = ms.search(torch.from_numpy(recall_q).to(ms.device), 1)
        same = float((mids[:, 0].cpu().numpy() == truth[:, 0]).mean())
        rows.append({"n": n, "index": "flat", "search_ms": best["flat"] * 1000, "build_s": build,
                     "recall_at_1": 1.0})
        rows.append({"n": n, "index": f"device-matmul({ms.device.type})", "search_ms": best["matmul"] * 1000,
                     "build_s": copy_s, "recall_at_1": same, "matmul_vs_flat": best["flat"] / best["matmul"]})
        del ms, xb, q_dev
        # faiss scans the vectors once per query below `distance_compute_blas_threshold` (20) queries;
        # as one BLAS matmul it reads them once per batch
        old = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1
        s = time_search(flat, queries, args.k, args.repeats)
        faiss.cvar.distance_compute_blas_threshold = old
        rows.append({"n": n, "index": "flat(blas)", "search_ms": s * 1000, "build_s": build, "recall_at_1": 1.0})
        del flat  # 1M x 1280 float32 is 5 GB: one index in memory at a time

        if not args.skip_ivf:
            ivf_rows(faiss, args, n, train_x, queries, recall_q, truth, params, rows)

        if n <= args.hnsw_max:
            hnsw = faiss.IndexHNSWFlat(args.dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = params["ef_construction"]
            t = time.perf_counter()
            for chunk in random_unit(n, args.dim, args.seed):
                hnsw.add(chunk)
            build = time.perf_counter() - t
            for ef in sorted({32, params["ef_search"]}):
                hnsw.hnsw.efSearch = ef
                s = time_search(hnsw, queries, args.k, args.repeats)
                _, ids = hnsw.search(recall_q, 1)
                rows.append({"n": n, "index": f"hnsw(M={params['hnsw_m']},ef={ef})", "search_ms": s * 1000,
                             "build_s": build, "recall_at_1": float((ids[:, 0] == truth[:, 0]).mean())})
                if ef == params["ef_search"]:
                    hnsw_measured.append((n, s))
            del hnsw
        elif hnsw_measured:
            n0, s0 = hnsw_measured[-1]
            s = s0 * math.log(n) / math.log(n0)
            rows.append({"n": n, "index": f"hnsw(M={params['hnsw_m']},ef={params['ef_search']})",
                         "search_ms": s * 1000, "build_s": None, "recall_at_1": None, "extrapolated": True})
        for r in rows:
            if r["n"] == n:
                r["fraction_of_step"] = r["search_ms"] / 1000 / step_s
                r["nn_every_for_10pct"] = max(1, math.ceil(r["fraction_of_step"] / 0.10))
                print(f"N={n:>8}  {r['index']:<28} search {r['search_ms']:8.2f} ms  "
                      f"= {100 * r['fraction_of_step']:6.1f}% of a step  -> nn-every {r['nn_every_for_10pct']:>3}  "
                      f"recall@1 {r['recall_at_1'] if r['recall_at_1'] is not None else 'n/a'}"
                      + ("  (extrapolated)" if r.get("extrapolated") else "")
                      + (f"  build {r['build_s']:.1f}s" if r.get("build_s") else "")
                      + (f"  flat/matmul {r['matmul_vs_flat']:.2f}x" if r.get("matmul_vs_flat") else ""), flush=True)

    result = {"step_ms": step_s * 1000, "shape": args.shape, "batch": args.batch, "k": args.k, "dim": args.dim,
              "index_params": params, "rows": rows, "seconds_total": time.perf_counter() - t0}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
