"""What the human-preference scorers share."""

from __future__ import annotations

from typing import Any


def features(out: Any) -> Any:
    """A float tensor of embeddings from `get_image_features`/`get_text_features` (a tensor, or an output
    object with `pooler_output` in transformers releases that return one)."""
    tensor = out if hasattr(out, "float") and not hasattr(out, "pooler_output") else out.pooler_output
    return tensor.float()


def clip_cosines(model: Any, processor: Any, items: list[Any], device: Any, *, text: dict[str, Any],
                 attention_mask: bool) -> list[float]:
    """Cosine of each item's image and its prompt in a CLIP model (PickScore, HPS): the images' and the
    unique prompts' features, normalised. `text`: the tokenizer's padding/length as the scorer's
    reference code sets them; `attention_mask`: whether its text tower reads the mask."""
    import torch

    from ovi_plugins.scorers.common import load_rgb

    pixels = processor(images=[load_rgb(it.path) for it in items], return_tensors="pt")["pixel_values"]
    prompts = list(dict.fromkeys(it.prompt for it in items))
    tok = processor(text=prompts, truncation=True, return_tensors="pt", **text)
    with torch.no_grad():
        img = features(model.get_image_features(pixel_values=pixels.to(device)))
        mask = {"attention_mask": tok["attention_mask"].to(device)} if attention_mask else {}
        txt = features(model.get_text_features(input_ids=tok["input_ids"].to(device), **mask))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    rows = [prompts.index(it.prompt) for it in items]
    return (img * txt[rows]).sum(-1).cpu().tolist()
