"""An example ovi plugin: keep the image embedding's norm near the store's mean norm.

    ovi gen "blue old car on a beach" --constraint norm            # weight 1.0
    ovi gen "blue old car on a beach" -c nn -c norm:0.5            # with the nn constraint

term(e) = (||e|| / m - 1)^2, with m the mean L2 norm of the store's raw image embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from ovi_cli import hookimpl
from ovi_cli.api import Constraint, ConstraintContext
from ovi_cli.errors import OviError


def norm_term(embeds: Tensor, target_norm: float) -> Tensor:
    """`(||e|| / m - 1)^2` per row of `[B, D]` embeddings: scale-free, 0 at the target norm."""
    return (embeds.float().norm(dim=-1) / target_norm - 1.0) ** 2


class NormConstraint(Constraint):
    """`(||e|| / m - 1)^2`, m = mean norm of the stored image embeddings."""

    name = "norm"  # what users type after --constraint
    default_weight = 1.0  # used when they give no :WEIGHT
    needs_stats = True  # ovi opens a stats store (--stats, or the newest for this encoder)
    description = "(||e|| / m - 1)^2: keep the embedding norm near the stored images' mean norm"

    def __init__(self, weight: float, context: ConstraintContext) -> None:
        super().__init__(weight, context)  # sets self.weight and self.context
        store = context.store
        if store is None:  # only when used as a library without a store
            raise OviError("constraint 'norm' needs an image-statistics store: run `ovi build-stats`")
        # Done once (in chunks: the stored embeddings can be large); per step only torch runs.
        emb = store.embeddings  # [N, D] numpy, raw image embeddings
        total = sum(float(np.linalg.norm(np.asarray(emb[i : i + 65536], dtype=np.float64), axis=1).sum())
                    for i in range(0, len(emb), 65536))
        self.target_norm = total / len(emb)

    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        # embeds: [B, D] float32 on context.device, differentiable. Return [B], unweighted.
        return norm_term(embeds, self.target_norm)

    def report(self, embeds: Tensor) -> list[dict[str, Any]]:
        # One JSON-able dict per prompt; it lands in the sidecar under constraint_values["norm"].
        norms = embeds.float().norm(dim=-1).tolist()
        return [{"norm": n, "target_norm": self.target_norm} for n in norms]


@hookimpl
def register_constraints(register):
    register(NormConstraint)
