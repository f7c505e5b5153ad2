"""The nearest-neighbour index: faiss, inner product over L2-normalised embeddings (= cosine).

`auto` picks an exact flat index up to `FLAT_MAX` vectors, and an HNSW graph above it (no
training pass, good recall, search time nearly independent of the size). `ivf` (IVF-Flat with
about 4 sqrt(N) lists, trained on a sample) is smaller to build on very large sets. Search
parameters (HNSW efSearch, IVF nprobe) are stored in `meta.json` and applied when loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
FLAT_MAX = 100_000  # `auto` is exact (flat) up to this many vectors (benchmarks/nn_search.py)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32
IVF_TRAIN_MAX = 100_000
ADD_CHUNK = 16_384


def _faiss():
    import faiss

    return faiss


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit length, float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def resolve_kind(kind: str, count: int) -> str:
    if kind not in INDEX_TYPES:
        raise ValueError(f"unknown index type {kind!r} (choose from {', '.join(INDEX_TYPES)})")
    if kind == "auto":
        return "flat" if count <= FLAT_MAX else "hnsw"
    return kind


def build_index(
    chunks: Callable[[], Iterator[np.ndarray]], count: int, dim: int, kind: str = "auto", seed: int = 0
) -> tuple[object, dict]:
    """Build an index over `count` vectors given by `chunks()` (float arrays [b, D], not normalised).

    `chunks` is called once per pass (IVF reads the data twice: train, then add). Returns the faiss
    index and a dict of its parameters for `meta.json`.
    """
    faiss = _faiss()
    kind = resolve_kind(kind, count)
    params: dict = {"type": kind, "metric": "inner_product", "normalised": True}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params.update(M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    else:
        nlist = max(1, min(int(4 * math.sqrt(count)), count // 39 or 1))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        take = min(count, IVF_TRAIN_MAX)
        chosen = np.sort(rng.choice(count, size=take, replace=False))
        sample, start = [], 0
        for chunk in chunks():
            stop = start + len(chunk)
            lo, hi = np.searchsorted(chosen, [start, stop])
            if hi > lo:
                sample.append(l2_normalise(chunk[chosen[lo:hi] - start]))
            start = stop
        index.train(np.concatenate(sample))
        nprobe = min(IVF_NPROBE, nlist)
        index.nprobe = nprobe
        params.update(nlist=nlist, nprobe=nprobe)
    for chunk in chunks():
        for i in range(0, len(chunk), ADD_CHUNK):
            index.add(l2_normalise(chunk[i : i + ADD_CHUNK]))
    return index, params


def apply_search_params(index, params: dict) -> None:
    faiss = _faiss()
    if params.get("type") == "hnsw" and "ef_search" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])
    elif params.get("type") == "ivf" and "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def write_index(index, handle) -> None:
    """Serialise `index` into an open binary handle (streamed: no second copy in memory)."""
    faiss = _faiss()
    faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))


def read_index(path: str, params: dict):
    index = _faiss().read_index(path)
    apply_search_params(index, params)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [B, k] float32, ids [B, k] int64) for raw queries [B, D]; k is capped at the size."""
    q = l2_normalise(np.atleast_2d(queries))
    k = max(1, min(int(k), int(index.ntotal)))
    sims, ids = index.search(np.ascontiguousarray(q), k)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)
