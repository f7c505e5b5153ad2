"""The CLIP towers that OVI works with: one object, whatever layout they were loaded from.

`Encoders` holds a text tower, a vision tower, a tokenizer and an image processor, and knows how
to encode text, images and pseudo-tokens. How the towers load is an encoder family's business
(`ovi_cli.api.EncoderFamily`, kind `encoder_family`): `kandinsky22-prior` reads the Kandinsky 2.2
prior repository layout (the default), `clip` a plain CLIP model folder. `Encoders.load(source)`
is the default family's loader.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ovi_cli.devices import autocast_context
from ovi_cli.pseudo_tokens import encode_pseudo_tokens
from ovi_cli.settings import DEFAULT_ENCODER_FAMILY, DEFAULT_ENCODER_MODEL, ENCODER_SUBFOLDERS  # noqa: F401


@dataclass
class TextEncoding:
    """What the text tower gives for a batch of prompts."""

    text_embeds: Tensor  # [B, projection_dim], float32: OVI's target
    last_hidden_state: Tensor  # [B, L, hidden], float32: what ECLIPSE-style priors attend to
    attention_mask: Tensor  # [B, L]
    truncated: list[bool] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)  # before truncation, start and end tokens included


def _image_processor_class():
    # transformers 5 names the torchvision-free processor `CLIPImageProcessorPil`;
    # older releases only have `CLIPImageProcessor`, which then needs no torchvision.
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


class Encoders:
    """CLIP text tower, vision tower, tokenizer and image processor, frozen, on one device."""

    def __init__(
        self,
        text_encoder,
        image_encoder,
        tokenizer,
        image_processor,
        *,
        source: str,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        family: str = DEFAULT_ENCODER_FAMILY,
    ) -> None:
        self.text_encoder = text_encoder.to(device).eval().requires_grad_(False)
        self.image_encoder = image_encoder.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.source = source
        self.device = device
        self.dtype = dtype
        self.family = family  # the encoder family that loaded the towers
        self._fingerprint: str | None = None

    @classmethod
    def load(
        cls,
        source: str = DEFAULT_ENCODER_MODEL,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        family: str = DEFAULT_ENCODER_FAMILY,
    ) -> Encoders:
        """Load from a hub id or a local folder through the encoder family `family` (a registered name)."""
        from ovi_cli.api import PluginContext
        from ovi_cli.plugins import get_registry

        family_cls = get_registry().get("encoder_family", family)
        context = PluginContext(name=family, device=torch.device(device), dtype=dtype)
        return family_cls(context).load_encoders(source)

    def to(self, device: torch.device | str) -> Encoders:
        """The towers moved to `device` (in place); returns self."""
        self.device = torch.device(device)
        self.text_encoder.to(self.device)
        self.image_encoder.to(self.device)
        return self

    # ---- facts about the towers -------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        """Width of the shared CLIP embedding space (1280 for Kandinsky 2.2)."""
        return int(self.image_encoder.config.projection_dim)

    @property
    def token_width(self) -> int:
        """Width of the vision transformer, i.e. of one pseudo-token (1664 for ViT-bigG-14)."""
        return int(self.image_encoder.config.hidden_size)

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.config.image_size)

    @property
    def max_text_tokens(self) -> int:
        limit = int(self.tokenizer.model_max_length)
        return min(limit, int(self.text_encoder.config.max_position_embeddings))

    def fingerprint(self) -> str:
        """A short id of the vision tower: its config and a hash of some of its weights.

        Weights are hashed after rounding to bfloat16, so a tower loaded in float32 and in a
        half precision gives the same fingerprint.
        """
        if self._fingerprint is None:
            cfg = self.image_encoder.config.to_dict()
            keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "image_size", "patch_size", "projection_dim", "hidden_act", "layer_norm_eps")
            h = hashlib.sha256(json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True).encode())
            vm = self.image_encoder.vision_model
            for t in (vm.embeddings.class_embedding, vm.embeddings.position_embedding.weight[:4],
                      self.image_encoder.visual_projection.weight[:8]):
                h.update(t.detach().to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    # ---- encoding ---------------------------------------------------------------------------
    def tokenize(self, prompts: list[str]) -> tuple[dict[str, Tensor], list[int]]:
        """Pad to the text tower's length; also each prompt's token count before truncation.

        Counts include the start and end tokens, as the limit does: a prompt was cut when its
        count exceeds `max_text_tokens`.
        """
        limit = self.max_text_tokens
        counts = [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]
        batch = self.tokenizer(
            list(prompts), padding="max_length", max_length=limit, truncation=True,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in batch.items()}, counts

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> TextEncoding:
        batch, counts = self.tokenize(prompts)
        with autocast_context(self.device, self.dtype):
            out = self.text_encoder(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            )
        return TextEncoding(
            text_embeds=out.text_embeds.float(),
            last_hidden_state=out.last_hidden_state.float(),
            attention_mask=batch["attention_mask"],
            truncated=[n > self.max_text_tokens for n in counts],
            token_counts=counts,
        )

    def preprocess(self, images) -> Tensor:
        """PIL images -> normalised pixel tensor with the encoder's own image processor."""
        rgb = [im.convert("RGB") for im in images]
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def encode_pixels(self, pixel_values: Tensor) -> Tensor:
        """`image_embeds` (raw projection output, float32) of normalised pixels."""
        pixels = pixel_values.to(self.device, self.image_encoder.dtype)
        with autocast_context(self.device, self.dtype):
            return self.image_encoder(pixel_values=pixels).image_embeds.float()

    def encode_images(self, images) -> Tensor:
        return self.encode_pixels(self.preprocess(images))

    def encode_pseudo_tokens(self, tokens: Tensor) -> Tensor:
        """Differentiable image embeddings of `[B, P, token_width]` pseudo-tokens (see OVI)."""
        return encode_pseudo_tokens(self.image_encoder, tokens)

    @torch.no_grad()
    def zero_image_embeds(self) -> Tensor:
        """`[1, D]` embedding of an all-zero normalised pixel tensor (a mean-grey image).

        The unconditional embedding that diffusers' Kandinsky prior and ECLIPSE use.
        """
        size = self.image_size
        return self.encode_pixels(torch.zeros(1, 3, size, size))

    def describe(self) -> dict:
        return {"source": self.source, "family": self.family, "fingerprint": self.fingerprint(),
                "embed_dim": self.embed_dim, "token_width": self.token_width}


def encoder_root_has_layout(path: Path) -> bool:
    return all((path / s).is_dir() for s in ENCODER_SUBFOLDERS)
