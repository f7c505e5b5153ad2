"""An example ovi plugin: keep the image embedding's norm near the store's mean norm.

    ovi gen "a red star" --model toy --constraint norm                 # offline, weight 1.0
    ovi gen "a red star" --model toy -c nn -c norm:0.5 --option norm.scale=1.2
    ovi gen "blue old car on a beach" --constraint norm                # Kandinsky 2.2 + a COCO store

term(e) = (||e|| / (scale * m) - 1)^2, with m the mean L2 norm of the store's raw image embeddings.

The module stays light: ovi imports it to register the constraint even for `ovi --help`, so
numpy and torch are imported only inside the methods that run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Constraint, PluginContext, PluginOption
from ovi_cli.errors import OviError

if TYPE_CHECKING:
    from torch import Tensor


def norm_term(embeds: Tensor, target_norm: float) -> Tensor:
    """`(||e|| / m - 1)^2` per row of `[B, D]` embeddings: scale-free, 0 at the target norm."""
    return (embeds.float().norm(dim=-1) / target_norm - 1.0) ** 2


def mean_norm(embeddings: Any, chunk: int = 65536) -> float:
    """Mean L2 norm of the rows of an `[N, D]` array, read in chunks (a store's can be large)."""
    import numpy as np

    total = sum(float(np.linalg.norm(np.asarray(embeddings[i : i + chunk], dtype=np.float64), axis=1).sum())
                for i in range(0, len(embeddings), chunk))
    return total / len(embeddings)


class NormConstraint(Constraint):
    """`(||e|| / (scale * m) - 1)^2`, m = mean norm of the stored image embeddings."""

    name = "norm"  # what users type after --constraint
    default_weight = 1.0  # used when they give no :WEIGHT
    needs_stats = True  # ovi opens a stats store (--stats, or the newest for this encoder)
    description = "(||e|| / m - 1)^2: keep the embedding norm near the stored images' mean norm"
    # set with --option norm.scale=1.2; ovi checks the type and the minimum, `ovi plugins --options` lists it
    options = (PluginOption("scale", float, 1.0, "target norm = scale x the stored images' mean norm",
                            minimum=0.01),)

    def __init__(self, context: PluginContext) -> None:
        super().__init__(context)  # sets self.context, self.weight (the user's, or default_weight), self.options
        store = context.store
        if store is None:  # only when used as a library without a store
            raise OviError("constraint 'norm' needs an image-statistics store: run `ovi build-stats`")
        # Done once; per step only torch runs. context.options holds this constraint's options.
        self.target_norm = context.options["scale"] * mean_norm(store.embeddings)

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
