"""The toy decoder and the toy prior networks, and how they are saved (config.json + model.safetensors).

ToyDecoderNet: a small convolutional generator, unit-normalised CLIP image embedding -> 64x64 RGB
in [0, 1], trained with a pixel loss. It stands in for Kandinsky's U-Net + MoVQ (see README, "Try it offline":
a diffusion decoder did not fit the CPU training budget).

ToyPriorNet: an ECLIPSE-style non-diffusion prior, text embedding + mean text hidden state ->
image embedding, trained with a projection loss plus a contrastive loss against the text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DECODER_FORMAT = "ovi-toy-decoder"
PRIOR_FORMAT = "ovi-toy-prior"


class ToyDecoderNet(nn.Module):
    def __init__(self, embed_dim: int = 64, base: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.config = {"embed_dim": embed_dim, "base": base, "image_size": image_size}
        self.base = base
        self.fc = nn.Linear(embed_dim, base * 8 * 8)
        c1, c2, c3 = base, base * 3 // 4, base // 2

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                                 nn.GroupNorm(4, cout), nn.SiLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU())

        self.up1 = block(c1, c2)  # 16x16
        self.up2 = block(c2, c3)  # 32x32
        self.out = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                 nn.Conv2d(c3, 3, 3, padding=1))  # 64x64

    def forward(self, embeds: Tensor) -> Tensor:
        """Raw image embeddings `[B, D]` -> images `[B, 3, 64, 64]` in [0, 1]."""
        e = F.normalize(embeds.float(), dim=-1)
        x = F.silu(self.fc(e)).view(-1, self.base, 8, 8)
        return torch.sigmoid(self.out(self.up2(self.up1(x))))


class ToyPriorNet(nn.Module):
    def __init__(self, text_dim: int = 64, hidden_dim: int = 64, embed_dim: int = 64, width: int = 256) -> None:
        super().__init__()
        self.config = {"text_dim": text_dim, "hidden_dim": hidden_dim, "embed_dim": embed_dim, "width": width}
        self.net = nn.Sequential(nn.Linear(text_dim + hidden_dim, width), nn.SiLU(), nn.Linear(width, width),
                                 nn.SiLU(), nn.Linear(width, embed_dim))
        self.register_buffer("image_norm", torch.tensor(1.0))  # mean norm of real image embeddings

    def forward(self, text_embeds: Tensor, last_hidden_state: Tensor, attention_mask: Tensor) -> Tensor:
        """Unit-normalised predicted image embedding direction `[B, D]`."""
        m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        pooled = (last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1.0)
        x = torch.cat([F.normalize(text_embeds, dim=-1), pooled], dim=-1)
        return F.normalize(self.net(x), dim=-1)

    def embed(self, text_embeds: Tensor, last_hidden_state: Tensor, attention_mask: Tensor) -> Tensor:
        """Raw-scale image embeddings (direction times the mean real-image norm)."""
        return self.forward(text_embeds, last_hidden_state, attention_mask) * self.image_norm


def save_net(net: nn.Module, folder: Path, fmt: str, extra: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"format": fmt, "version": 1, **net.config, **(extra or {})}  # type: ignore[dict-item]
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))


def load_net(folder: Path, fmt: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load a net saved by `save_net`; ValueError when the folder holds something else."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file() or not (folder / "model.safetensors").is_file():
        raise ValueError(f"{folder} holds no config.json + model.safetensors")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != fmt:
        raise ValueError(f"{folder} is not an {fmt} folder (format {cfg.get('format')!r})")
    if fmt == DECODER_FORMAT:
        net: nn.Module = ToyDecoderNet(cfg["embed_dim"], cfg["base"], cfg["image_size"])
    else:
        net = ToyPriorNet(cfg["text_dim"], cfg["hidden_dim"], cfg["embed_dim"], cfg["width"])
    net.load_state_dict(load_file(str(folder / "model.safetensors")))
    return net.eval().requires_grad_(False), cfg
