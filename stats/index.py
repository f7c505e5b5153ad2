"""The nearest-neighbour index: faiss, inner product over L2-normalised embeddings (= cosine).

Kinds (`--index`): `flat` (exact), `hnsw` (graph over the full vectors), `ivf` (IVF-Flat),
`ivfpq` (IVF with product-quantised codes), `opq` (OPQ rotation + IVF-PQ: the compressed index
LAION-scale stores need), and `auto`, which picks by count and memory budget (`choose_kind`).

`auto`'s rules, in order (constants below; `ovi build-stats --help` reads them from this file's source):

1. exact `flat` up to `FLAT_MAX` vectors when its `4 N D` bytes fit the budget (ovi's rule: the
   NN constraint prefers exact neighbours where they are cheap, benchmarks/nn_search.py);
2. below `QUANTIZATION_MIN` vectors (too few to train product-quantiser codebooks): `hnsw`;
3. `hnsw` with M = min(32, floor((budget / (4 N) - D) / 2)) links when that M >= `HNSW_M_MIN`;
4. `ivf` (IVF-Flat) below `IVF_FLAT_MAX` vectors when its size fits;
5. otherwise `opq` with the largest PQ code (bytes per vector, `PQ_CHOICES`) whose N (code + 8)
   bytes fit the budget.

Rules 2-5, the list counts (`ivf_lists`), the training-sample size (`TRAIN_PER_LIST` vectors a
list) and the OPQ output width are autofaiss's (`get_optimal_index_keys_v2`,
`get_optimal_nb_clusters`, `get_optimal_train_size`, `get_optimal_quantization` in
criteo/autofaiss `autofaiss/external/optimize.py`), re-implemented here rather than depending on
autofaiss (which pins its own faiss); two deviations: rule 1 (autofaiss: flat below 1000), and the
list count 2^round(log2(4 sqrt N)) is used at every size (autofaiss jumps to 16k-262k lists above 1M,
a k-means that takes hours on a CPU), with an HNSW coarse quantiser from `HNSW_QUANTIZER_LISTS` lists.

Training reads a seeded sample, adding streams the vectors in chunks, and an IVF index is
memory-mapped when opened (`faiss.IO_FLAG_MMAP`): its inverted lists stay on disk. Search
parameters (HNSW efSearch, IVF nprobe) are stored in `meta.json` and applied when loaded.
Compressed kinds (`ivfpq`, `opq`) give approximate scores: the store re-ranks their candidates
exactly against the stored embeddings (`StatsStore.search`, `RERANK_FACTOR`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator

import numpy as np

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq", "opq")
INDEX_KINDS = INDEX_TYPES[1:]
COMPRESSED = ("ivfpq", "opq")  # approximate scores: candidates are re-ranked exactly
FLAT_MAX = 100_000  # `auto` is exact (flat) up to this many vectors (benchmarks/nn_search.py)
QUANTIZATION_MIN = 10_000  # fewer vectors cannot train 256-entry PQ codebooks (autofaiss)
HNSW_M_MIN = 8  # autofaiss: an HNSW graph with fewer links a node is not worth it
IVF_FLAT_MAX = 1_000_000  # autofaiss: IVF-Flat is tried below this many vectors
PQ_CHOICES = (256, 128, 64, 48, 32, 24, 16, 8, 4)  # bytes per vector, largest first (autofaiss)
PQ_ID_BYTES = 8  # an inverted list stores an int64 id beside each code
TRAIN_PER_LIST = 100  # training vectors per IVF list (autofaiss; faiss wants 30-256)
HNSW_QUANTIZER_LISTS = 1000  # from this many lists, the coarse quantiser is an HNSW graph (autofaiss)
DEFAULT_MEMORY = 4 * 1024**3  # `--index-memory` default: 4 GiB
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 32  # lists visited a query, at least (1/16 of the lists when that is more)
IVF_TRAIN_MAX = 1_000_000  # at most this many training vectors, whatever the list count
RERANK_FACTOR = 10  # a compressed index returns k * this many candidates, re-ranked exactly
RERANK_MIN = 100  # ... and at least this many
ADD_CHUNK = 16_384


def _faiss():
    import faiss

    return faiss


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit length, float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


# ---- sizes and rules (pure) -------------------------------------------------------------------
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}


def parse_memory(text: str | int) -> int:
    """`"4GB"`, `"512MB"`, `"1.5G"`, `"2TiB"` or a byte count -> bytes (binary units: 1 GB = 2^30 B)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).upper() not in _UNITS:
            raise ValueError(f"not a memory size like 4GB or 512MB: {text!r}")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return value


def ivf_lists(count: int) -> int:
    """IVF list count: the power of two nearest 4 sqrt(N), at most N / 39 (faiss's points per centroid)."""
    lists = 2 ** round(math.log2(max(4.0 * math.sqrt(max(count, 1)), 1.0)))
    return int(max(1, min(lists, count // 39)))


def ivf_nprobe(lists: int) -> int:
    return int(min(lists, max(IVF_NPROBE, lists // 16)))


def hnsw_links(count: int, dim: int, memory: int) -> int:
    """autofaiss's HNSW M for a budget: floor((memory / (4 N) - D) / 2) (the graph takes 4 N (D + 2M) bytes)."""
    return int(math.floor((memory / (4.0 * max(count, 1)) - dim) / 2))


def ivf_flat_bytes(count: int, dim: int) -> int:
    return 4 * count * dim + PQ_ID_BYTES * count + 4 * ivf_lists(count) * dim


def pq_bytes(count: int, code: int) -> int:
    return (code + PQ_ID_BYTES) * count


def pq_code(count: int, dim: int, memory: int, kind: str = "opq") -> int:
    """The largest PQ code (bytes a vector) whose index fits `memory` (ivfpq: one that divides D)."""
    for code in PQ_CHOICES:
        if code >= dim or (kind == "ivfpq" and dim % code):
            continue
        if pq_bytes(count, code) <= memory:
            return code
    raise ValueError(f"an index of {count} vectors does not fit {memory} bytes even as {kind} with "
                     f"{min(PQ_CHOICES)}-byte codes ({pq_bytes(count, min(PQ_CHOICES))} bytes); "
                     "raise --index-memory")


def opq_width(dim: int, code: int) -> int:
    """OPQ's output width: a multiple of the code, a little above D / code blocks (autofaiss)."""
    return (min(dim // code, 6) + 1) * code


def choose_kind(count: int, dim: int, memory: int = DEFAULT_MEMORY) -> str:
    """`auto`'s choice for `count` vectors of dimension `dim` under `memory` bytes (module docstring)."""
    if count <= FLAT_MAX and 4 * count * dim <= memory:
        return "flat"
    if count < QUANTIZATION_MIN:
        return "hnsw"
    if hnsw_links(count, dim, memory) >= HNSW_M_MIN:
        return "hnsw"
    if count < IVF_FLAT_MAX and ivf_flat_bytes(count, dim) <= memory:
        return "ivf"
    return "opq"


def resolve_kind(kind: str, count: int, dim: int = 1280, memory: int = DEFAULT_MEMORY) -> str:
    if kind not in INDEX_TYPES:
        raise ValueError(f"unknown index type {kind!r} (choose from {', '.join(INDEX_TYPES)})")
    if kind == "auto":
        return choose_kind(count, dim, memory)
    if kind in COMPRESSED and count < QUANTIZATION_MIN:
        raise ValueError(f"--index {kind} needs at least {QUANTIZATION_MIN} embeddings to train its codebooks "
                         f"(this store has {count}); use flat, hnsw or ivf")
    return kind


# ---- building ---------------------------------------------------------------------------------
def _factory_key(kind: str, count: int, dim: int, memory: int) -> tuple[str, dict]:
    lists = ivf_lists(count)
    coarse = f"IVF{lists}_HNSW32" if lists >= HNSW_QUANTIZER_LISTS else f"IVF{lists}"
    params: dict = {"nlist": lists, "nprobe": ivf_nprobe(lists)}
    if kind == "ivf":
        return f"{coarse},Flat", params
    code = pq_code(count, dim, memory, kind)
    params["pq"] = code
    if kind == "ivfpq":
        return f"{coarse},PQ{code}x8", params
    width = opq_width(dim, code)
    params["opq_width"] = width
    return f"OPQ{code}_{width},{coarse},PQ{code}x8", params


def _sample(chunks: Callable[[], Iterator[np.ndarray]], count: int, take: int, seed: int) -> np.ndarray:
    """`take` rows chosen at random (seeded) from the `count` rows of `chunks()`, normalised, in one pass."""
    chosen = np.sort(np.random.default_rng(seed).choice(count, size=take, replace=False))
    sample, start = [], 0
    for chunk in chunks():
        stop = start + len(chunk)
        lo, hi = np.searchsorted(chosen, [start, stop])
        if hi > lo:
            sample.append(l2_normalise(chunk[chosen[lo:hi] - start]))
        start = stop
    return np.concatenate(sample)


def build_index(
    chunks: Callable[[], Iterator[np.ndarray]], count: int, dim: int, kind: str = "auto", seed: int = 0,
    memory: int = DEFAULT_MEMORY,
) -> tuple[object, dict]:
    """Build an index over `count` vectors given by `chunks()` (float arrays [b, D], not normalised).

    `chunks` is called once per pass (a trained kind reads the data twice: a sample to train on,
    then everything to add, in chunks). Returns the faiss index and its parameters for `meta.json`.
    """
    faiss = _faiss()
    kind = resolve_kind(kind, count, dim, memory)
    params: dict = {"type": kind, "metric": "inner_product", "normalised": True}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        links = HNSW_M if count <= FLAT_MAX else max(HNSW_M_MIN, min(HNSW_M, hnsw_links(count, dim, memory)))
        index = faiss.IndexHNSWFlat(dim, links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        params.update(M=links, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH)
    else:
        key, extra = _factory_key(kind, count, dim, memory)
        index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
        skip_polysemous_training(index)
        take = min(count, IVF_TRAIN_MAX, max(TRAIN_PER_LIST * extra["nlist"], 256 * 39 if kind in COMPRESSED else 1))
        index.train(_sample(chunks, count, take, seed))
        params.update(extra, factory=key, trained_on=int(take))
        apply_search_params(index, params)
    for chunk in chunks():
        for i in range(0, len(chunk), ADD_CHUNK):
            index.add(l2_normalise(chunk[i : i + ADD_CHUNK]))
    return index, params


def skip_polysemous_training(index) -> None:
    """Turn off faiss's polysemous training of an IVF-PQ index (`index_factory` turns it on for 8-bit codes).

    Polysemous training only reorders the PQ centroids so that Hamming distances between codes
    approximate real distances, for the `ht` (polysemous threshold) filter at search time; ovi never
    sets `ht` (nor does autofaiss's `ht=2048`, above any code's bit count), so the search results are
    the same without it (the centroids are the same, only their numbering differs), and it was most
    of the training time: `IVF512,PQ64x8` on 20,000 vectors, one thread, trained in 225 s with it
    and 39 s without (docs/statistics.md#index).
    """
    ivf = _faiss().try_extract_index_ivf(index)
    if ivf is not None:
        ivf = _faiss().downcast_index(ivf)
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False


def apply_search_params(index, params: dict) -> None:
    faiss = _faiss()
    kind = params.get("type")
    if kind == "hnsw" and "ef_search" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])
    elif kind in ("ivf",) + COMPRESSED and "nprobe" in params:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(params["nprobe"])
        quantizer = faiss.downcast_index(ivf.quantizer)
        if hasattr(quantizer, "hnsw"):
            quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, 2 * int(params["nprobe"]))


def write_index(index, handle) -> None:
    """Serialise `index` into an open binary handle (streamed: no second copy in memory)."""
    faiss = _faiss()
    faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))


def read_index(path: str, params: dict):
    """The index at `path`; IVF kinds memory-mapped (their inverted lists stay on disk)."""
    faiss = _faiss()
    mmap = params.get("type") in ("ivf",) + COMPRESSED
    index = faiss.read_index(path, faiss.IO_FLAG_MMAP if mmap else 0)
    apply_search_params(index, params)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosines [B, k] float32, ids [B, k] int64) for raw queries [B, D]; k is capped at the size."""
    q = l2_normalise(np.atleast_2d(queries))
    k = max(1, min(int(k), int(index.ntotal)))
    sims, ids = index.search(np.ascontiguousarray(q), k)
    return sims.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)


def rerank(queries: np.ndarray, ids: np.ndarray, vectors: Callable[[np.ndarray], np.ndarray],
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top `k` among candidate `ids` [B, C] (-1 = none): cosines against `vectors(ids)`.

    `vectors(flat_ids)` returns the stored (raw) embeddings of those rows; exact cosines are computed
    in float32 against their normalised values, so the result is the exact search restricted to the
    candidates (ties and misses outside the candidates are the only difference from exact).
    """
    q = l2_normalise(np.atleast_2d(queries))
    b, c = ids.shape
    safe = np.where(ids < 0, 0, ids)
    order = np.argsort(safe.reshape(-1), kind="stable")  # read the memmap in row order
    flat = safe.reshape(-1)[order]
    vec = np.empty((b * c, q.shape[1]), dtype=np.float32)
    vec[order] = l2_normalise(vectors(flat))
    sims = np.einsum("bcd,bd->bc", vec.reshape(b, c, -1), q)
    sims[ids < 0] = -np.inf
    k = min(k, c)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, top, 1).astype(np.float32), np.take_along_axis(ids, top, 1).astype(np.int64)


def candidates(k: int, count: int) -> int:
    return int(min(count, max(k * RERANK_FACTOR, RERANK_MIN)))


def exact_top(queries: np.ndarray, chunks: Iterator[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (cosines, ids) of raw `queries` over the rows of `chunks` (streamed, any size)."""
    q = l2_normalise(np.atleast_2d(queries))
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    start = 0
    for chunk in chunks:
        sims = q @ l2_normalise(chunk).T
        ids = np.broadcast_to(np.arange(start, start + len(chunk)), sims.shape)
        s, i = np.concatenate([best_s, sims], 1), np.concatenate([best_i, ids], 1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        start += len(chunk)
    return best_s, best_i


def recall_at(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact ids found among its approximate ids (recall@k, k = exact's width)."""
    if exact.size == 0:
        return 1.0
    hits = [len(set(a.tolist()) & set(e.tolist())) / len(e) for a, e in zip(approx, exact)]
    return float(np.mean(hits))
