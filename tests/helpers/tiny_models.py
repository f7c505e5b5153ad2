"""Tiny random models in the real hub layouts, built from transformers/diffusers config classes.

`make_encoder_repo(dir)` writes a folder shaped like `kandinsky-community/kandinsky-2-2-prior`
(image_encoder/, text_encoder/, tokenizer/, image_processor/, plus a prior/ to be ignored);
`make_decoder_repo(dir)` one shaped like `kandinsky-community/kandinsky-2-2-decoder`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

EMBED_DIM = 16  # projection_dim of the tiny CLIP (1280 in Kandinsky 2.2)
TOKEN_WIDTH = 32  # hidden size of the tiny vision tower (1664 in ViT-bigG-14)
IMAGE_SIZE = 32
PATCH = 8


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tiny_clip_tokenizer(folder: Path, max_length: int = 16) -> None:
    """A character-level CLIPTokenizer (vocab of single byte-characters, no merges)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                        model_max_length=max_length)
    tok.save_pretrained(folder)


def make_encoder_repo(root: Path, seed: int = 0, max_length: int = 77) -> Path:
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_clip_tokenizer(root / "tokenizer", max_length=max_length)
    from transformers import CLIPTokenizer

    vocab_size = len(CLIPTokenizer.from_pretrained(root / "tokenizer"))
    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=24, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=max_length, projection_dim=EMBED_DIM,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    CLIPTextModelWithProjection(text_cfg).eval().save_pretrained(root / "text_encoder")
    vis_cfg = CLIPVisionConfig(
        hidden_size=TOKEN_WIDTH, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=EMBED_DIM,
    )
    CLIPVisionModelWithProjection(vis_cfg).eval().save_pretrained(root / "image_encoder")
    proc = {
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "CLIPImageProcessor", "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": IMAGE_SIZE},
    }
    (root / "image_processor").mkdir(exist_ok=True)
    (root / "image_processor" / "preprocessor_config.json").write_text(json.dumps(proc))
    (root / "prior").mkdir(exist_ok=True)  # present in the real repo; ovi ignores it
    (root / "prior" / "config.json").write_text("{}")
    return root


def make_decoder_repo(root: Path, seed: int = 0, task: str = "text2img") -> Path:
    """A tiny decoder in the layout of kandinsky-2-2-decoder (`task="text2img"`, also read by img2img),
    kandinsky-2-2-decoder-inpaint (`"inpaint"`: 9 input channels) or kandinsky-2-2-controlnet-depth
    (`"controlnet"`: the hint embedding, and a MoVQ that scales by 8 like the real one, as the hint
    block does)."""
    import diffusers
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    torch.manual_seed(seed)
    in_channels = {"text2img": 4, "inpaint": 9, "controlnet": 8}[task]
    unet = UNet2DConditionModel(
        in_channels=in_channels, out_channels=8,
        addition_embed_type="image_hint" if task == "controlnet" else "image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64),
        layers_per_block=1, encoder_hid_dim=EMBED_DIM, encoder_hid_dim_type="image_proj",
        cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
        class_embed_type=None, sample_size=8,
    )
    levels = 4 if task == "controlnet" else 2
    movq = VQModel(
        block_out_channels=[32, 64] if levels == 2 else [32, 32, 32, 64],
        down_block_types=["DownEncoderBlock2D"] * (levels - 1) + ["AttnDownEncoderBlock2D"],
        in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
        num_vq_embeddings=12, out_channels=3,
        up_block_types=["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * (levels - 1), vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, prediction_type="epsilon", thresholding=False,
    )
    pipeline = {"text2img": "KandinskyV22Pipeline", "inpaint": "KandinskyV22InpaintPipeline",
                "controlnet": "KandinskyV22ControlnetPipeline"}[task]
    getattr(diffusers, pipeline)(unet=unet, scheduler=scheduler, movq=movq).save_pretrained(root)
    return root
