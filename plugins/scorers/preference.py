"""What the human-preference scorers share."""

from __future__ import annotations

from typing import Any


def features(out: Any) -> Any:
    """A float tensor of embeddings from `get_image_features`/`get_text_features` (a tensor, or an output
    object with `pooler_output` in transformers releases that return one)."""
    tensor = out if hasattr(out, "float") and not hasattr(out, "pooler_output") else out.pooler_output
    return tensor.float()
