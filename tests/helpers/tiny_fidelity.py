"""Tiny random models for the fidelity feature spaces, in their hub layouts.

`make_dinov2_repo(dir)` writes a folder shaped like `facebook/dinov2-base`: a `Dinov2Model`
(config.json + model.safetensors) and its `preprocessor_config.json` (a `BitImageProcessor`: resize
the shorter side, centre crop, ImageNet normalisation), scaled down to 32-pixel crops.
"""

from __future__ import annotations

from pathlib import Path

import torch


def make_dinov2_repo(root: Path, seed: int = 0) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       image_size=32, patch_size=8, mlp_ratio=2)
    Dinov2Model(cfg).eval().save_pretrained(root)
    # facebook/dinov2-base's processor: shortest_edge 256, crop 224, bicubic, ImageNet mean/std
    BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                      do_convert_rgb=True).save_pretrained(root)
    return root
