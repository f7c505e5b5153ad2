"""What a plugin implements: priors, constraints and decoders, and the data they exchange.

A plugin registers classes (see `ovi_cli.hookspecs`); ovi instantiates them. Everything here
is plain Python and torch: no CLI involved.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ovi_cli.encoders import Encoders, TextEncoding

# on_progress(step, total, values): values are per-prompt numbers to show, e.g. {"cos": [..]}
ProgressFn = Callable[[int, int, dict[str, list[float]]], None]


@dataclass
class ConstraintContext:
    """What a constraint is built from."""

    encoders: Encoders
    device: torch.device
    dtype: torch.dtype
    store: Any | None = None  # an `ovi_stats.store.StatsStore`, when one was named or found
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"nn_every": 1, "nn_k": 1}


class Constraint(ABC):
    """A differentiable penalty on the image embedding, added to OVI's loss with a weight.

    OVI minimises, per prompt: `(1 - cos(e, t)) + sum_c weight_c * term_c(e)`.
    """

    name: ClassVar[str]
    default_weight: ClassVar[float] = 1.0
    needs_stats: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, weight: float, context: ConstraintContext) -> None:
        self.weight = float(weight)
        self.context = context

    @abstractmethod
    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        """Unweighted penalty `[B]` for raw image embeddings `[B, D]` (float32), differentiable.

        `step` counts from 0 (`steps` for the final embedding); `rows` holds each row's index in
        the original batch (prompts that stopped early leave the batch), for per-prompt state.
        """

    def report(self, embeds: Tensor) -> list[dict[str, Any]]:
        """Per-prompt JSON-able facts about the final embeddings `[B, D]` for the sidecar."""
        return [{} for _ in range(embeds.shape[0])]


@dataclass
class ConstraintSpec:
    """A constraint as named on the command line: `NAME[:WEIGHT]`."""

    name: str
    weight: float | None = None  # None: the constraint's default weight

    @classmethod
    def parse(cls, text: str) -> ConstraintSpec:
        from ovi_cli.errors import OviError

        name, sep, weight = text.strip().partition(":")
        if not name or (sep and not weight):
            raise OviError(f"malformed --constraint {text!r}: expected NAME or NAME:WEIGHT")
        if not sep:
            return cls(name)
        try:
            value = float(weight)
        except ValueError:
            raise OviError(f"malformed --constraint {text!r}: weight {weight!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise OviError(f"malformed --constraint {text!r}: weight must be a finite number >= 0")
        return cls(name, value)


@dataclass
class PriorJob:
    """Everything a prior gets for one batch of prompts."""

    prompts: list[str]
    text: TextEncoding
    encoders: Encoders
    seeds: list[int]
    settings: Any  # ovi_cli.settings.GenSettings
    constraints: list[Constraint] = field(default_factory=list)
    on_progress: ProgressFn | None = None


@dataclass
class PriorOutput:
    """Image embeddings `[B, D]` (raw, at CLIP image-embedding scale) and per-prompt records."""

    image_embeds: Tensor
    records: list[dict[str, Any]]


class Prior(ABC):
    """Text -> CLIP image embedding."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    uses_constraints: ClassVar[bool] = False

    @abstractmethod
    def embed(self, job: PriorJob) -> PriorOutput:
        """Image embeddings for `job.prompts`, one row per prompt."""


class Decoder(ABC):
    """CLIP image embedding (+ negative embedding) -> images."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    produces_images: ClassVar[bool] = True

    def __init__(self, settings: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.settings = settings
        self.device = device
        self.dtype = dtype

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights (called once before the first `decode`)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    @abstractmethod
    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """PIL images, one per row of `image_embeds` (an empty list for decoders without images)."""
