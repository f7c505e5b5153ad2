"""Built-in constraints: `mahalanobis` and `nn` (nearest neighbour), read from a stats store.

Both keep OVI's image embedding `e` (the raw projection output, at CLIP image-embedding scale)
near real images, using a store written by `ovi build-stats` (`ovi_stats.store.StatsStore`).
OVI minimises, per prompt, `(1 - cos(e, t)) + sum_c weight_c * term_c(e)`; the formulas below are
the unweighted `term_c`.

- `mahalanobis` (default weight 0.009):  `(e - mu)^T P (e - mu)`, `mu` the store's mean and `P`
  its well-conditioned precision (inverse of the shrunk covariance), evaluated as
  `||L^T (e - mu)||^2` with the store's precomputed Cholesky factor `P = L L^T`.
- `nn` (default weight 0.5): `mean_{j=1..k} (1 - cos(e, n_j))`, `n_1..n_k` the raw stored
  embeddings of the `k` nearest images to the current embedding (`--option nn.k`, default 1),
  searched (cosine) every `--option nn.every` steps (default 1) and held constant in between and
  within a step (no gradient flows through the search): exactly, by one matmul on the device,
  where the store's embeddings fit its memory budget, in the store's faiss index otherwise
  (`--option nn.search`, `choose_search`).

Light on import (torch and numpy load when a constraint is built), so listing plugins is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Constraint, ConstraintContext, PluginOption
from ovi_cli.errors import OviError

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def require_store(context: ConstraintContext, name: str) -> Any:
    """The context's stats store, checked against the encoder; one-line `OviError` otherwise."""
    store = context.store
    if store is None:
        raise OviError(
            f"constraint {name!r} needs an image-statistics store: build one with "
            "`ovi build-stats IMAGES_DIR` (or name one with --stats NAME_OR_PATH)"
        )
    dim = int(context.encoders.embed_dim)
    if int(store.dim) != dim:
        raise OviError(
            f"constraint {name!r}: the stats store {str(getattr(store, 'path', '?'))!r} holds "
            f"{store.dim}-d embeddings but the encoder makes {dim}-d ones; rebuild it with "
            "`ovi build-stats` and this encoder"
        )
    return store


def _as_tensor(value: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    import numpy as np
    import torch

    return torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value).to(device, dtype)


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (CPU, CUDA); float32 on MPS."""
    import torch

    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class MahalanobisConstraint(Constraint):
    """`(e - mu)^T P (e - mu)` with the store's mean `mu` and shrunk precision `P = L L^T`.

    Evaluated as `||L^T (e - mu)||^2` from the store's precomputed lower Cholesky factor `L`
    (moved to the device once, float64 there, float32 on MPS): no inversion per step. Large
    weights pull every prompt to `mu`, the generic "mean image" (the paper: lambda >= 0.05).
    Sidecar values: `distance` (`sqrt` of the term) and `cosine_to_mean`.
    """

    name = "mahalanobis"
    default_weight = 0.009
    needs_stats = True
    description = "(e - mu)^T P (e - mu): stay in the bulk of the image-embedding distribution"

    def __init__(self, context: ConstraintContext) -> None:
        super().__init__(context)
        store = require_store(context, self.name)
        dtype = work_dtype(context.device)
        self.mean = _as_tensor(store.mean, context.device, dtype)
        self.chol = _as_tensor(store.precision_cholesky, context.device, dtype)

    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        from ovi_cli.losses import mahalanobis_sq

        return mahalanobis_sq(embeds, self.mean, self.chol).float()

    def report(self, embeds: Tensor) -> list[dict[str, Any]]:
        import torch

        from ovi_cli.losses import cosine, mahalanobis_sq

        with torch.no_grad():
            e = embeds.to(self.mean.device)
            d2 = mahalanobis_sq(e, self.mean, self.chol).clamp_min(0).sqrt().cpu().tolist()
            cos = cosine(e, self.mean.expand_as(e)).cpu().tolist()
        return [{"distance": d, "cosine_to_mean": c} for d, c in zip(d2, cos)]


SEARCH_MODES = ("auto", "matmul", "faiss")


def choose_search(mode: str, device_type: str, index_type: str, fits: bool) -> str:
    """How the `nn` constraint searches: `device-matmul` or `faiss-<index type>`.

    `auto`: on an accelerator (CUDA, MPS) an exact matmul search on the device whenever the store's
    embeddings fit its budget (`ovi_stats.matmul_search.fits`), faiss otherwise; on a CPU the
    matmul search replaces only a *flat* faiss index (same neighbours, 3-4.5x faster at OVI's batch
    sizes: docs/speed.md), and an approximate index (HNSW/IVF, stores above 100k images) stays,
    since an exact scan of 1M vectors costs a CPU more than a ViT-B/32 step. `matmul` / `faiss`
    force one (`matmul` still needs the budget).
    """
    if mode not in SEARCH_MODES:
        raise OviError(f"--option nn.search must be one of {', '.join(SEARCH_MODES)} (got {mode!r})")
    faiss_kind = f"faiss-{index_type}"
    if mode == "faiss" or not fits:
        return faiss_kind
    if mode == "matmul" or device_type != "cpu" or index_type == "flat":
        return "device-matmul"
    return faiss_kind


class NearestNeighborConstraint(Constraint):
    """`mean_{j<=k} (1 - cos(e, n_j))`, `n_j` the stored embeddings nearest to `e` (cosine).

    Options (`--option nn.k=K`, `--option nn.every=E`; aliases `--nn-k`, `--nn-every`): `k`
    neighbours (default 1), searched with the detached current embedding at steps 0, E, 2E, ...
    for `every = E` (default 1: every step) and reused in between, per prompt (by its row in the
    original batch, since finished prompts leave the batch). The final embedding (evaluated
    without autograd) is always searched afresh, so its term and the sidecar's neighbours agree.
    `--option nn.search` (`auto` | `matmul` | `faiss`, see `choose_search`): either one exact
    matmul against the store's normalised embeddings kept on the device (`device-matmul`: no host
    round trip per step) or the store's faiss index on the host (`faiss-flat`, `faiss-hnsw`,
    `faiss-ivf`, `faiss-ivfpq`, `faiss-opq`; on the compressed two the store re-ranks
    `ovi_stats.index.candidates(k)` candidates by their exact cosine to the stored embeddings, and the
    term uses those stored embeddings, so it is the exact term whenever the true neighbours are among
    the candidates: benchmarks/scale_nn.py measures how often and by how much). The term is a
    cosine, so it does not depend on the stored vectors' scale: the
    device path uses the normalised ones, the faiss path the raw ones.
    Sidecar values: `k`, `every`, `search`, `searches` (index searches made for the prompt, the final one
    included) and `neighbours`: `[{file, id, cosine, metadata?}]` of the final embedding, nearest first
    (`metadata`: the row's key, caption, url ... where the store's source gave them).
    """

    name = "nn"
    default_weight = 0.5
    needs_stats = True
    description = "mean_k (1 - cos(e, nearest stored image embeddings)): stay near real images"
    options = (
        PluginOption("k", int, 1, "neighbours per search (the term is the mean over them)", minimum=1,
                     flag="--nn-k"),
        PluginOption("every", int, 1, "search the index every E steps (neighbours are reused between)",
                     minimum=1, flag="--nn-every"),
        PluginOption("search", str, "auto", "auto: exact matmul on the device where the embeddings fit "
                     "(on a CPU only instead of a flat index), else faiss; matmul; faiss",
                     choices=SEARCH_MODES),
    )

    def __init__(self, context: ConstraintContext) -> None:
        import torch

        super().__init__(context)
        self.store = require_store(context, self.name)
        opts = context.options or {}
        self.k = _positive_int(opts.get("k", 1), "--option nn.k")
        self.every = _positive_int(opts.get("every", 1), "--option nn.every")
        count = int(self.store.count)
        if self.k > count:
            raise OviError(f"--option nn.k={self.k} is more than the {count} images in the stats store")
        self.search_kind = self._choose(str(opts.get("search", "auto")), torch.device(context.device))
        self._matmul = None
        if self.search_kind == "device-matmul":
            from ovi_stats.matmul_search import MatmulSearch

            self._matmul = MatmulSearch.from_store(self.store, context.device)
        self._vectors: Tensor | None = None  # [R, k, D] float32 on the device, by original row
        self._have = torch.zeros(0, dtype=torch.bool)  # [R]: row R has neighbours
        self._searches = torch.zeros(0, dtype=torch.long)  # [R]: index searches for row R
        self._rows_host: Tensor | None = None  # the last `rows` seen, and its copy on the device
        self._rows_dev: Tensor | None = None

    def _choose(self, mode: str, device: torch.device) -> str:
        from ovi_stats.matmul_search import fits, free_bytes

        index_type = str((getattr(self.store, "index_params", None) or {}).get("type", "flat"))
        ok = mode != "faiss" and fits(int(self.store.count), int(self.store.dim), free_bytes(device))
        if mode == "matmul" and not ok:
            raise OviError("--option nn.search=matmul: the store's embeddings do not fit the device's memory "
                           "budget (a quarter of its free memory)")
        return choose_search(mode, device.type, index_type, ok)

    # ---- the search ---------------------------------------------------------------------------
    def neighbours(self, embeds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(cosines `[B, k]`, ids `[B, k]`, stored embeddings `[B, k, D]` on the device of `embeds`).

        Device path: all three on the device, nothing copied to the host; a diverged (non-finite)
        embedding is checked for only outside autograd (the final evaluation and the report), since
        the check waits for the device. Faiss path: cosines and ids on the host, the raw stored
        embeddings copied to the device.
        """
        import numpy as np
        import torch

        if self._matmul is not None:
            if not torch.is_grad_enabled() and not bool(torch.isfinite(embeds).all()):
                raise OviError(_DIVERGED)
            cos, ids = self._matmul.search(embeds, self.k)
            return cos, ids, self._matmul.vectors(ids).to(embeds.device)
        queries = np.ascontiguousarray(embeds.detach().float().cpu().numpy(), dtype=np.float32)
        if not np.isfinite(queries).all():
            raise OviError(_DIVERGED)
        cos, ids = self.store.search(queries, self.k)
        ids = np.asarray(ids, dtype=np.int64)
        if (ids < 0).any():
            raise OviError(f"the stats store's index returned fewer than {self.k} neighbours (--nn-k)")
        vectors = np.asarray(self.store.embeddings[ids.reshape(-1)], dtype=np.float32)
        vectors = torch.from_numpy(vectors.reshape(ids.shape[0], self.k, -1)).to(embeds.device)
        return torch.from_numpy(np.asarray(cos)), torch.from_numpy(ids), vectors

    def _ensure(self, rows: int, dim: int, device: torch.device) -> None:
        import torch

        if self._vectors is None or self._vectors.device != device:
            self._vectors = torch.zeros(0, self.k, dim, device=device)
            self._have = torch.zeros(0, dtype=torch.bool)
            self._searches = torch.zeros(0, dtype=torch.long)
        grow = rows - self._vectors.shape[0]
        if grow > 0:
            self._vectors = torch.cat([self._vectors, torch.zeros(grow, self.k, dim, device=device)])
            self._have = torch.cat([self._have, torch.zeros(grow, dtype=torch.bool)])
            self._searches = torch.cat([self._searches, torch.zeros(grow, dtype=torch.long)])

    # ---- Constraint ---------------------------------------------------------------------------
    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        import torch

        from ovi_cli.losses import nn_term

        if not (torch.is_tensor(rows) and rows.device.type == "cpu" and rows.dtype == torch.long):
            rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        if step == 0:  # a new batch: forget the neighbours of the previous one
            self._have = torch.zeros_like(self._have)
            self._searches = torch.zeros_like(self._searches)
        self._ensure(int(rows.max()) + 1, embeds.shape[-1], embeds.device)
        assert self._vectors is not None
        rows_dev = self._on_device(rows, embeds.device)
        fresh = step % self.every == 0 or not torch.is_grad_enabled()
        need = torch.ones_like(rows, dtype=torch.bool) if fresh else ~self._have[rows]
        if fresh:  # everyone: no boolean mask on the device (that would wait for it)
            _, _, vectors = self.neighbours(embeds)
            self._vectors[rows_dev] = vectors
        elif need.any():
            _, _, vectors = self.neighbours(embeds[need.to(embeds.device)])
            self._vectors[rows[need].to(embeds.device)] = vectors
        self._have[rows[need]] = True
        self._searches[rows[need]] += 1
        return nn_term(embeds, self._vectors[rows_dev])

    def _on_device(self, rows: Tensor, device: torch.device) -> Tensor:
        """`rows` on the device, copied only when the engine hands over a new rows tensor."""
        if self._rows_host is not rows or self._rows_dev is None or self._rows_dev.device != device:
            self._rows_host, self._rows_dev = rows, rows.to(device)
        return self._rows_dev

    def report(self, embeds: Tensor) -> list[dict[str, Any]]:
        import torch

        from ovi_cli.losses import cosine

        with torch.no_grad():
            _, ids, vectors = self.neighbours(embeds)
            cos = cosine(embeds.float().unsqueeze(1).to(vectors.device), vectors).cpu().tolist()
            ids = ids.cpu().tolist()
        files = self.store.files
        named = getattr(self.store, "row_metadata", None)  # key, caption, url ... (webdataset, clip-retrieval)
        rows_meta = named([i for row in ids for i in row]) if named is not None else []
        meta = {int(i): m for i, m in zip([i for row in ids for i in row], rows_meta) if m}
        out = []
        for b in range(embeds.shape[0]):
            hits = [{"file": str(files[int(i)]), "id": int(i), "cosine": float(c),
                     **({"metadata": meta[int(i)]} if int(i) in meta else {})} for i, c in zip(ids[b], cos[b])]
            searches = int(self._searches[b]) if b < self._searches.shape[0] else 0
            out.append({"k": self.k, "every": self.every, "search": self.search_kind, "searches": searches,
                        "neighbours": hits})
        return out


_DIVERGED = ("constraint 'nn': the embedding being optimised became NaN or infinite (the optimisation "
             "diverged); lower --lr / --weight-decay or the constraint weights")


def _positive_int(value: Any, flag: str) -> int:
    import numpy as np

    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise OviError(f"{flag} must be a whole number >= 1 (got {value!r})")
    return int(value)


@hookimpl
def register_constraints(register):
    register(MahalanobisConstraint)
    register(NearestNeighborConstraint)
