"""Compressed indexes for the `nn` constraint: recall, query time and the term's error, on clustered data.

    .venv/bin/python benchmarks/scale_nn.py                          # 100k and 1M vectors
    .venv/bin/python benchmarks/scale_nn.py --sizes 100000 --kinds ivfpq opq --dim 128
    nohup nice -n 10 .venv/bin/python -u benchmarks/scale_nn.py --sizes 100000 1000000 --kinds ivfpq opq \
        --bytes-per-vector 48 > nn.log 2>&1 &

Data: a Gaussian mixture (`--clusters` centres ~ N(0, I), points = centre + `--spread` * N(0, I),
cluster sizes Zipf-like), so neighbours mean something (uniform noise has no neighbours worth the
name and makes every index look bad). Queries are fresh draws from the same mixture (not in the store).

For each size N and each index kind it writes a real store (`ovi_stats.store.write_store`, float16
embeddings, the kind's own training and parameters) and measures, against an exact scan of the
stored vectors:
  - recall@1 and recall@10 of the index alone and of `StatsStore.search` (what the `nn` constraint
    calls: on `ivfpq`/`opq` it re-ranks `ovi_stats.index.candidates(k)` candidates exactly);
  - query time of `StatsStore.search` for a batch of `--batch` queries, k = 10 (fastest of 3);
  - the NN term inside an OVI-like loop: `--steps` Adam steps on `--batch` embeddings minimising
    `(1 - cos(e, t)) + w * nn_term(e, neighbours(e))` (t a random target, w = 0.5, the `nn`
    constraint's default weight, neighbours searched every step with `StatsStore.search`,
    `ovi_cli.losses.nn_term`), run once with the exact (flat) store and once with the kind's; at
    every step the kind's term is compared with the exact term *at the same embedding*: max and
    mean |difference|.
Every index is built by the library's own rules (`ovi_stats.index`: the list count `ivf_lists(N)`,
training on a seeded sample of `min(N, TRAIN_PER_LIST * nlist)` vectors, autofaiss's rule, the PQ
code for the budget: 4 GiB, or `--bytes-per-vector B` x N, the budget under which `auto` picks a
compressed index); the script prints which kind `--index auto` would pick at each N
(for `--dim` and for 1280-d embeddings), the chosen parameters and sample size, and a time stamp
before each phase (`--faiss-verbose` also prints faiss's own k-means progress). `--threads`
(default 1) caps faiss's and torch's threads, for a shared machine.
The LAST line printed is JSON (all figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovi_cli.losses import nn_term  # noqa: E402
from ovi_stats import index as nn_index  # noqa: E402
from ovi_stats.store import write_store  # noqa: E402

ENC = {"source": "synthetic/gaussian-mixture", "fingerprint": "bench"}
T0 = time.perf_counter()


def say(text: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {text}", flush=True)


def verbose_faiss() -> None:
    """Make every index the library builds report its training (faiss prints k-means iterations)."""
    import faiss

    factory = faiss.index_factory

    def loud(*args, **kwargs):
        index = factory(*args, **kwargs)
        index.verbose = True
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.verbose = True
            ivf.cp.verbose = True
        return index

    faiss.index_factory = loud


def mixture(n: int, dim: int, clusters: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    weights = 1.0 / np.arange(1, clusters + 1)
    weights /= weights.sum()
    labels = rng.choice(clusters, size=n, p=weights)
    x = centres[labels] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x, centres


def draws(centres: np.ndarray, n: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    return centres[labels] + spread * rng.standard_normal((n, centres.shape[1])).astype(np.float32)


def exact(store, q: np.ndarray, k: int) -> np.ndarray:
    emb = store.embeddings
    chunks = (np.asarray(emb[i : i + 65536], np.float32) for i in range(0, len(emb), 65536))
    return nn_index.exact_top(q, chunks, k)[1]


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def loop_term_error(store, ref, starts: np.ndarray, target: np.ndarray, steps: int, weight: float = 0.5) -> dict:
    """Run the loop with `store`'s search; at each step compare its NN term with the exact one."""
    e = torch.tensor(starts, requires_grad=True)
    t = torch.tensor(target)
    opt = torch.optim.Adam([e], lr=0.05)
    diffs = []
    for _ in range(steps):
        q = e.detach().numpy()
        _, ids = store.search(q, 1)
        _, ref_ids = ref.search(q, 1)
        nb = torch.tensor(np.asarray(store.embeddings[ids.reshape(-1)], np.float32)).reshape(len(q), 1, -1)
        ref_nb = torch.tensor(np.asarray(ref.embeddings[ref_ids.reshape(-1)], np.float32)).reshape(len(q), 1, -1)
        term = nn_term(e, nb)
        with torch.no_grad():
            diffs.append((term - nn_term(e, ref_nb)).abs().max().item())
        loss = (1 - torch.nn.functional.cosine_similarity(e, t, dim=-1)) + weight * term
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return {"term_diff_max": float(np.max(diffs)), "term_diff_mean": float(np.mean(diffs)), "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--kinds", nargs="+", default=["hnsw", "ivf", "ivfpq", "opq"])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=0.6)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hnsw-max", type=int, default=100_000, help="skip HNSW builds above this size (slow on a CPU)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="faiss and torch threads (default 1: a shared machine)")
    ap.add_argument("--bytes-per-vector", type=int, default=None,
                    help="index budget = this x N (default: the 4 GiB default budget)")
    ap.add_argument("--faiss-verbose", action="store_true", help="print faiss's training progress")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    if args.faiss_verbose:
        verbose_faiss()
    say(f"faiss {faiss.__version__}, {args.threads} thread(s), sizes {args.sizes}, kinds {args.kinds}, "
        f"dim {args.dim}")
    results, auto = [], {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            memory = args.bytes_per_vector * n if args.bytes_per_vector else nn_index.DEFAULT_MEMORY
            auto[n] = {d: nn_index.choose_kind(n, d, memory) for d in sorted({args.dim, 1280})}
            lists = nn_index.ivf_lists(n)
            say(f"N={n}: --index auto picks {auto[n]} (dim: kind, budget {memory / 2**20:.1f} MiB); IVF kinds: "
                f"nlist {lists}, "
                f"trained on {min(n, nn_index.TRAIN_PER_LIST * lists)} vectors")
            x, centres = mixture(n, args.dim, args.clusters, args.spread, seed=0)
            names = [f"row{i}" for i in range(n)]
            say(f"N={n}: data drawn; writing the exact (flat) store")
            t0 = time.perf_counter()
            ref = write_store(Path(tmp) / f"flat-{n}", x, names, encoder=ENC, index="flat")
            say(f"N={n}: flat store in {time.perf_counter() - t0:.1f} s")
            del x
            q = draws(centres, args.queries, args.spread, seed=1)
            truth = exact(ref, q, 10)
            say(f"N={n}: exact top-10 of {args.queries} queries")
            starts = draws(centres, args.batch, args.spread, seed=2)
            target = np.random.default_rng(3).standard_normal((args.batch, args.dim)).astype(np.float32)
            for kind in ["flat"] + list(args.kinds):
                if kind == "hnsw" and n > args.hnsw_max:
                    print(f"N={n} hnsw: skipped (--hnsw-max {args.hnsw_max})", flush=True)
                    continue
                if kind == "flat":
                    store, build_s = ref, None
                else:
                    say(f"N={n} {kind}: building (train, add, write, held-out recall)")
                    t0 = time.perf_counter()
                    store = write_store(Path(tmp) / f"{kind}-{n}", np.asarray(ref.embeddings), names, encoder=ENC,
                                        index=kind, index_memory=memory)
                    build_s = time.perf_counter() - t0
                    say(f"N={n} {kind}: built in {build_s:.0f} s, {store.index_params}; measuring")
                _, raw_ids = nn_index.search(store.index, q, 10)
                _, ids = store.search(q, 10)
                qb = q[: args.batch]
                row = {
                    "n": n, "dim": args.dim, "kind": kind, "threads": args.threads, "index_memory": memory,
                    "params": store.index_params,
                    "index_bytes": store.index_bytes(), "build_s": build_s,
                    "recall1_index": nn_index.recall_at(raw_ids[:, :1], truth[:, :1]),
                    "recall10_index": nn_index.recall_at(raw_ids, truth),
                    "recall1": nn_index.recall_at(ids[:, :1], truth[:, :1]),
                    "recall10": nn_index.recall_at(ids, truth),
                    "query_ms_batch": 1000 * timed(lambda s=store, qb=qb: s.search(qb, 10)),
                    **loop_term_error(store, ref, starts, target, args.steps),
                }
                results.append(row)
                say(f"N={n} {kind:6s} recall@1 {row['recall1']:.3f} (index {row['recall1_index']:.3f}) "
                      f"recall@10 {row['recall10']:.3f} (index {row['recall10_index']:.3f}) "
                      f"query {row['query_ms_batch']:.2f} ms/batch{args.batch}  term |diff| max "
                      f"{row['term_diff_max']:.2e} mean {row['term_diff_mean']:.2e}  "
                      f"index {row['index_bytes'] / 1e6:.1f} MB"
                      + (f"  built in {build_s:.0f} s" if build_s else ""))
    print(json.dumps({"benchmark": "scale_nn", "auto": auto, "results": results}))


if __name__ == "__main__":
    main()
