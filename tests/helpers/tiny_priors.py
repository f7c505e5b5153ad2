"""Tiny random baseline priors in the published hub layouts, built from diffusers' own classes.

- `make_kandinsky_prior_repo(dir)`: a folder shaped like `kandinsky-community/kandinsky-2-2-prior`
  (image_encoder/, text_encoder/, tokenizer/, image_processor/, prior/, scheduler/). Unlike
  `tiny_models.make_encoder_repo`, the text tower's hidden width equals the projection width (16),
  as in ViT-bigG-14 (1280 = 1280), because a `PriorTransformer` projects both with one width.
  The folder also serves as `--encoder-model`.
- `make_eclipse_repo(dir)`: a folder shaped like `ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior`
  (`config.json` with the published keys + `diffusion_pytorch_model.safetensors` at the root).
  The weights come from diffusers' `PriorTransformer` with `additional_embeddings=3` minus its
  `time_embedding.*` parameters: exactly how ECLIPSE's module differs from diffusers' class.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.helpers import tiny_models

EMBED_DIM = tiny_models.EMBED_DIM
TEXT_TOKENS = 77  # the tokenizer pads to 77 like CLIP's; num_embeddings of both priors

ECLIPSE_TINY_CONFIG = {
    "_class_name": "PriorTransformer",
    "_diffusers_version": "0.20.2",
    "_name_or_path": "tiny-random-eclipse",
    "added_emb_type": "prd",
    "additional_embeddings": 3,
    "attention_head_dim": 8,
    "clip_embed_dim": None,
    "dropout": 0.0,
    "embedding_dim": EMBED_DIM,
    "embedding_proj_dim": None,
    "embedding_proj_norm_type": None,
    "encoder_hid_proj_type": "linear",
    "norm_in_type": None,
    "num_attention_heads": 2,
    "num_embeddings": TEXT_TOKENS,
    "num_layers": 2,
}


def _randomise_zero_params(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random init leaves positional/prd embeddings and clip_mean/std at zero: fill them in."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in ("positional_embedding", "prd_embedding", "clip_mean"):
                p.copy_(torch.randn(p.shape, generator=generator) * (0.5 if name == "clip_mean" else 0.1))
            elif name == "clip_std":
                p.copy_(1.0 + 0.1 * torch.rand(p.shape, generator=generator))


def diffusers_eclipse_reference(seed: int = 0):
    """diffusers' `PriorTransformer` configured like the tiny ECLIPSE (it keeps a time embedding)."""
    from diffusers import PriorTransformer

    torch.manual_seed(seed)
    cfg = {k: v for k, v in ECLIPSE_TINY_CONFIG.items() if not k.startswith("_")}
    model = PriorTransformer(**cfg).eval()
    _randomise_zero_params(model, torch.Generator().manual_seed(seed + 1))
    return model


def make_eclipse_repo(root: Path, seed: int = 0) -> Path:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    model = diffusers_eclipse_reference(seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("time_")}
    assert state["positional_embedding"].shape[1] == TEXT_TOKENS + 3
    save_file(state, str(root / "diffusion_pytorch_model.safetensors"))
    (root / "config.json").write_text(json.dumps(ECLIPSE_TINY_CONFIG, indent=2))
    (root / "README.md").write_text("tiny random ECLIPSE prior for tests\n")
    return root


def make_kandinsky_prior_repo(root: Path, seed: int = 0) -> Path:
    from diffusers import PriorTransformer, UnCLIPScheduler
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    tiny_models.make_encoder_repo(root, seed=seed, max_length=TEXT_TOKENS)
    vocab_size = len(CLIPTokenizer.from_pretrained(root / "tokenizer"))
    torch.manual_seed(seed + 7)
    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=EMBED_DIM, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TEXT_TOKENS, projection_dim=EMBED_DIM,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    CLIPTextModelWithProjection(text_cfg).eval().save_pretrained(root / "text_encoder")

    torch.manual_seed(seed + 11)
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=EMBED_DIM,
        num_embeddings=TEXT_TOKENS, additional_embeddings=4, added_emb_type="prd",
        encoder_hid_proj_type="linear", norm_in_type=None, embedding_proj_norm_type=None,
        time_embed_act_fn="silu",
    ).eval()
    _randomise_zero_params(prior, torch.Generator().manual_seed(seed + 12))
    prior_dir = root / "prior"
    for f in prior_dir.glob("*"):  # tiny_models leaves a placeholder config there
        f.unlink()
    prior.save_pretrained(prior_dir)
    UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
        clip_sample=True, clip_sample_range=10.0,
    ).save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps(KANDINSKY_PRIOR_MODEL_INDEX, indent=2))
    return root


KANDINSKY_PRIOR_MODEL_INDEX = {  # as in kandinsky-community/kandinsky-2-2-prior
    "_class_name": "KandinskyV22PriorPipeline",
    "_diffusers_version": "0.18.0.dev0",
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "image_processor": ["transformers", "CLIPImageProcessor"],
    "prior": ["diffusers", "PriorTransformer"],
    "scheduler": ["diffusers", "UnCLIPScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
}

_CACHE: dict[str, Path] = {}


def session_repos(tmp_path_factory) -> dict[str, Path]:
    """The tiny Kandinsky-prior folder (`kandinsky`, also an encoder folder), the tiny ECLIPSE
    folder (`eclipse`) and a tiny decoder (`decoder`), built once per test session."""
    if not _CACHE:
        base = tmp_path_factory.mktemp("tiny_priors")
        _CACHE["kandinsky"] = make_kandinsky_prior_repo(base / "kandinsky-2-2-prior")
        _CACHE["eclipse"] = make_eclipse_repo(base / "ECLIPSE_KandinskyV22_Prior")
        _CACHE["decoder"] = tiny_models.make_decoder_repo(base / "decoder")
    return _CACHE
