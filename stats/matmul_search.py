"""Exact nearest neighbours by one matrix product on a torch device (the `nn` constraint's fast path).

The store's embeddings are L2-normalised once (float32, the same rounding as the faiss index's
vectors: `ovi_stats.index.l2_normalise`) and kept on the device; a search of `[B, D]` queries is
one `[B, D] x [D, N]` product and `torch.topk`, so the neighbours never leave the device and the
optimisation loop makes no host round trip for them. The result is exact: the same ids as faiss's
flat inner-product index wherever the similarities are distinct (they differ by float rounding
only), and unlike HNSW/IVF it never misses a neighbour.

Memory: `4 * N * D` bytes (COCO's 118k x 1280: 0.6 GB). `fits` says whether that is at most
`BUDGET_FRACTION` of the device's free memory; the caller falls back to faiss otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

# At most this fraction of the device's free memory (when the constraint is set up, before OVI's
# loop allocates its activations): COCO (0.6 GB) takes <1% of an 80 GB GPU, 1M x 1280 (5.1 GB) ~7%;
# OVI at ViT-bigG-14 keeps bf16 weights (3.6 GB) and, at batch 32, some 20-30 GB of activations.
BUDGET_FRACTION = 0.25
CHUNK_ROWS = 1 << 18  # stored rows per matmul block: [B, 262144] float32 similarities at a time


def search_bytes(count: int, dim: int) -> int:
    """Device memory the normalised float32 embeddings take."""
    return 4 * int(count) * int(dim)


def free_bytes(device: torch.device | str) -> int | None:
    """Free memory of `device`: CUDA's free memory, a CPU's `MemAvailable`; None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def fits(count: int, dim: int, free: int | None, fraction: float = BUDGET_FRACTION) -> bool:
    """True when the normalised embeddings take at most `fraction` of `free` bytes (unknown: no)."""
    return free is not None and search_bytes(count, dim) <= fraction * free


class MatmulSearch:
    """Exact cosine top-k against normalised embeddings `[N, D]` held on one device."""

    def __init__(self, normed: Tensor, chunk_rows: int = CHUNK_ROWS) -> None:
        if normed.dim() != 2 or normed.dtype != torch.float32:
            raise ValueError("MatmulSearch needs float32 [N, D] normalised embeddings")
        self.normed = normed
        self.chunk_rows = int(chunk_rows)

    @classmethod
    def from_chunks(
        cls, chunks: Iterable[np.ndarray], count: int, dim: int, device: torch.device | str, **kw
    ) -> MatmulSearch:
        """Normalise raw embedding chunks `[b, D]` (any float dtype) on the host and copy them over."""
        from ovi_stats.index import l2_normalise

        normed = torch.empty(count, dim, dtype=torch.float32, device=device)
        start = 0
        for chunk in chunks:
            stop = start + len(chunk)
            normed[start:stop] = torch.from_numpy(l2_normalise(chunk)).to(device)
            start = stop
        if start != count:
            raise ValueError(f"got {start} embeddings, expected {count}")
        return cls(normed, **kw)

    @classmethod
    def from_store(cls, store, device: torch.device | str, **kw) -> MatmulSearch:
        """The embeddings of an `ovi_stats.store.StatsStore`, streamed from its file."""
        return cls.from_chunks(store.iter_embeddings(), int(store.count), int(store.dim), device, **kw)

    @property
    def count(self) -> int:
        return int(self.normed.shape[0])

    @property
    def device(self) -> torch.device:
        return self.normed.device

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """(cosines `[B, k]` float32, ids `[B, k]` int64), nearest first, on the device.

        Queries are raw `[B, D]` embeddings (normalised here, as the faiss path does); `k` is
        capped at the number of stored embeddings. No gradient flows.
        """
        k = max(1, min(int(k), self.count))
        with torch.no_grad():
            q = queries.detach().to(self.device, torch.float32)
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            # [N, D] x [D, B] (stored rows streamed once, as a plain product): 1.6x faster on a CPU
            # than [B, D] x [D, N] with the same result (benchmarks/RESULTS.md)
            sims, ids = [], []
            for start in range(0, self.count, self.chunk_rows):
                block = self.normed[start : start + self.chunk_rows]
                s, i = torch.topk(block @ q.T, min(k, block.shape[0]), dim=0)  # [k, B]
                sims.append(s)
                ids.append(i + start)
            if len(sims) == 1:
                return sims[0].T.contiguous(), ids[0].T.contiguous()
            s, pick = torch.topk(torch.cat(sims, dim=0), k, dim=0)
            return s.T.contiguous(), torch.gather(torch.cat(ids, dim=0), 0, pick).T.contiguous()

    def vectors(self, ids: Tensor) -> Tensor:
        """The normalised stored embeddings `[B, k, D]` of `ids` `[B, k]`, on the device."""
        return self.normed[ids.reshape(-1)].reshape(*ids.shape, self.normed.shape[1])
