"""Tiny random decoders of other CLIP spaces, saved in the real repositories' layouts.

- `make_vit_h_clip(dir)`: a plain `CLIPModel` folder like `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`
  (the ViT-H stand-in: 12-d, where the Kandinsky stand-in of `tiny_models` is 16-d, as 1024 vs 1280);
- `make_unclip_repo(dir, clip)`: `stabilityai/stable-diffusion-2-1-unclip`'s layout (feature_extractor/,
  image_encoder/ = the CLIP folder's vision tower, image_normalizer/, image_noising_scheduler/,
  text_encoder/, tokenizer/, unet/, scheduler/, vae/, model_index.json);
- `make_sdxl_repo(dir)`: `stabilityai/stable-diffusion-xl-base-1.0`'s layout;
- `make_ip_adapter_repo(dir, sdxl)`: `h94/IP-Adapter` with `sdxl_models/ip-adapter_sdxl.safetensors`
  in the official key layout (`image_proj.proj.weight`, `image_proj.norm.*`,
  `ip_adapter.{1,3,5,...}.to_k_ip.weight` / `to_v_ip.weight`: one pair per cross-attention
  layer, numbered as the original repository numbers all attention processors).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import tiny_models, tiny_scorers

VIT_H_DIM = 12  # projection width of the ViT-H stand-in (1024 in the real one)


def make_vit_h_clip(root: Path, seed: int = 5) -> Path:
    return tiny_scorers.make_clip_repo(root, seed=seed, projection_dim=VIT_H_DIM)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, norm_num_groups=32, sample_size=32)


def _text_encoder(root: Path, sub: str, with_projection: bool = False, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tiny_models.write_tiny_clip_tokenizer(root / sub.replace("text_encoder", "tokenizer"), max_length=77)
    vocab = len(CLIPTokenizer.from_pretrained(root / sub.replace("text_encoder", "tokenizer")))
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, projection_dim=projection_dim,
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    model = (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()
    model.save_pretrained(root / sub)


def make_unclip_repo(root: Path, clip: Path, seed: int = 0) -> Path:
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig.from_pretrained(clip)
    vis = config.vision_config
    vis.projection_dim = config.projection_dim
    # the unCLIP repo ships the very vision tower of its CLIP space
    CLIPVisionModelWithProjection.from_pretrained(clip, config=vis).save_pretrained(root / "image_encoder")
    (root / "feature_extractor").mkdir()
    (root / "feature_extractor" / "preprocessor_config.json").write_text(
        (clip / "preprocessor_config.json").read_text())
    StableUnCLIPImageNormalizer(embedding_dim=VIT_H_DIM).save_pretrained(root / "image_normalizer")
    DDPMScheduler(beta_schedule="squaredcos_cap_v2").save_pretrained(root / "image_noising_scheduler")
    _text_encoder(root, "text_encoder")
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(32, 64), attention_head_dim=(2, 4),
        class_embed_type="projection", projection_class_embeddings_input_dim=VIT_H_DIM * 2, cross_attention_dim=32,
        layers_per_block=1, upcast_attention=True, use_linear_projection=True,
    ).save_pretrained(root / "unet")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
                  set_alpha_to_one=False, steps_offset=1).save_pretrained(root / "scheduler")
    _vae().save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableUnCLIPImg2ImgPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "image_normalizer": ["stable_diffusion", "StableUnCLIPImageNormalizer"],
        "image_noising_scheduler": ["diffusers", "DDPMScheduler"],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }))
    return root


def make_sdxl_repo(root: Path, seed: int = 0) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tmp = root.parent / f".{root.name}-parts"
    _text_encoder(tmp, "text_encoder")
    _text_encoder(tmp, "text_encoder_2", with_projection=True, projection_dim=32)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=8 * 6 + 32, cross_attention_dim=64,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=CLIPTextModel.from_pretrained(tmp / "text_encoder"),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(tmp / "text_encoder_2"),
        tokenizer=CLIPTokenizer.from_pretrained(tmp / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(tmp / "tokenizer_2"), unet=unet, scheduler=scheduler,
    ).save_pretrained(root)
    return root


def make_ip_adapter_repo(root: Path, sdxl: Path, embed_dim: int = tiny_models.EMBED_DIM, seed: int = 0) -> Path:
    """`h94/IP-Adapter`'s `sdxl_models/ip-adapter_sdxl.safetensors` for the tiny SDXL's U-Net, in the official keys."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(sdxl / "unet")
    cross = int(unet.config.cross_attention_dim)
    tokens = 4  # IP-Adapter (not Plus): four image tokens
    weights = {
        "image_proj.proj.weight": torch.randn(cross * tokens, embed_dim) * 0.05,
        "image_proj.proj.bias": torch.zeros(cross * tokens),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    for number, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            continue  # self-attention: no adapter weights, but it takes a number
        attention = unet.get_submodule(name[: -len(".processor")])
        hidden = int(attention.to_out[0].out_features)
        weights[f"ip_adapter.{number}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.05
        weights[f"ip_adapter.{number}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.05
    (root / "sdxl_models").mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, root / "sdxl_models" / "ip-adapter_sdxl.safetensors")
    return root
