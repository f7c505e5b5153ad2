"""Baseline priors: `eclipse` (ECLIPSE, a one-pass trained prior) and `kandinsky` (Kandinsky 2.2's
diffusion prior). Both map the prompt's CLIP text encoding to a CLIP image embedding, like `ovi`.

ECLIPSE (`ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior`) is a diffusers-style `PriorTransformer`
with the timestep embedding removed: 10 blocks, 16 heads x 32, `additional_embeddings` 3, the
`prd` token, no time token. diffusers' own `PriorTransformer` always adds a time token (its
positional embedding has `num_embeddings + additional_embeddings` rows with one more token, and
its forward requires a timestep), so it cannot load these weights; `EclipsePriorTransformer`
below is that module, written here with the same parameter names as the published
`diffusion_pytorch_model.safetensors` (the names of diffusers' `PriorTransformer` minus
`time_proj`/`time_embedding`), loaded with `strict=True`. One forward pass:

    tokens = [W_enc h_text (L tokens), W_proj t, W_in x, prd] + positional embedding
    mask   = text padding mask (-10000 on pads) + causal mask; 10 pre-LN transformer blocks
    e      = W_out LayerNorm(tokens)[prd]

with `t` the text embedding (`text_embeds`), `h_text` the text tower's last hidden state,
`x ~ N(0, I)` from the prompt's seed. No classifier-free guidance, no `clip_mean`/`clip_std`
post-processing (ECLIPSE's pipeline returns the raw output). The text tower is ovi's encoder's
(`Encoders.encode_text`), which for Kandinsky 2.2 is the same ViT-bigG-14 text model ECLIPSE uses.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_cli import hookimpl
from ovi_cli.api import Prior, PriorJob, PriorOutput
from ovi_cli.encoders import Encoders
from ovi_cli.errors import OviError
from ovi_cli.hub import resolve_model_dir

DEFAULT_ECLIPSE_MODEL = "ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior"
DEFAULT_KANDINSKY_PRIOR_MODEL = "kandinsky-community/kandinsky-2-2-prior"
ECLIPSE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
KANDINSKY_PRIOR_SUBFOLDERS = ("prior", "scheduler")
_MASK_VALUE = -10000.0  # what diffusers' and ECLIPSE's PriorTransformer put on masked positions

# The published config.json's keys (besides `_class_name`, `_diffusers_version`, `_name_or_path`).
ECLIPSE_CONFIG_KEYS = (
    "added_emb_type", "additional_embeddings", "attention_head_dim", "clip_embed_dim", "dropout",
    "embedding_dim", "embedding_proj_dim", "embedding_proj_norm_type", "encoder_hid_proj_type",
    "norm_in_type", "num_attention_heads", "num_embeddings", "num_layers",
)


# ---- the ECLIPSE module ------------------------------------------------------------------------
class _SelfAttention(nn.Module):
    """diffusers `Attention` as used by `BasicTransformerBlock` (self-attention, biased q/k/v)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.head_dim = head_dim
        self.to_q = nn.Linear(dim, inner, bias=True)
        self.to_k = nn.Linear(dim, inner, bias=True)
        self.to_v = nn.Linear(dim, inner, bias=True)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, bias=True), nn.Dropout(0.0)])

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, _ = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim))
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))


class _GeluProj(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))


class _FeedForward(nn.Module):
    """diffusers `FeedForward(dim, activation_fn="gelu")`: Linear(4x) -> GELU -> Linear."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProj(dim, 4 * dim), nn.Dropout(dropout), nn.Linear(4 * dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class _Block(nn.Module):
    """diffusers `BasicTransformerBlock(dim, heads, head_dim, activation_fn="gelu",
    attention_bias=True)` without cross-attention: pre-LN self-attention, pre-LN feed-forward."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = _SelfAttention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = _FeedForward(dim, dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x), mask)
        return x + self.ff(self.norm3(x))


class EclipsePriorTransformer(nn.Module):
    """ECLIPSE's prior: diffusers' `PriorTransformer` without the timestep embedding (see module doc).

    Parameter names match the published `diffusion_pytorch_model.safetensors`.
    """

    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 32,
        num_layers: int = 10,
        embedding_dim: int = 1280,
        num_embeddings: int = 77,
        additional_embeddings: int = 3,
        dropout: float = 0.0,
        norm_in_type: str | None = None,
        embedding_proj_norm_type: str | None = None,
        encoder_hid_proj_type: str | None = "linear",
        added_emb_type: str | None = "prd",
        embedding_proj_dim: int | None = None,
        clip_embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.config = {
            "num_attention_heads": num_attention_heads, "attention_head_dim": attention_head_dim,
            "num_layers": num_layers, "embedding_dim": embedding_dim, "num_embeddings": num_embeddings,
            "additional_embeddings": additional_embeddings, "dropout": dropout, "norm_in_type": norm_in_type,
            "embedding_proj_norm_type": embedding_proj_norm_type, "encoder_hid_proj_type": encoder_hid_proj_type,
            "added_emb_type": added_emb_type, "embedding_proj_dim": embedding_proj_dim,
            "clip_embed_dim": clip_embed_dim,
        }
        inner = num_attention_heads * attention_head_dim
        proj_dim = embedding_proj_dim or embedding_dim
        clip_dim = clip_embed_dim or embedding_dim
        self.heads = num_attention_heads
        self.num_embeddings = num_embeddings
        self.additional_embeddings = additional_embeddings
        self.embedding_dim = embedding_dim

        self.proj_in = nn.Linear(embedding_dim, inner)
        self.embedding_proj_norm = _norm_or_none(embedding_proj_norm_type, proj_dim, "embedding_proj_norm_type")
        self.embedding_proj = nn.Linear(proj_dim, inner)
        if encoder_hid_proj_type == "linear":
            self.encoder_hidden_states_proj: nn.Linear | None = nn.Linear(embedding_dim, inner)
        elif encoder_hid_proj_type is None:
            self.encoder_hidden_states_proj = None
        else:
            raise OviError(f"ECLIPSE prior config: unsupported encoder_hid_proj_type {encoder_hid_proj_type!r}")
        self.positional_embedding = nn.Parameter(torch.zeros(1, num_embeddings + additional_embeddings, inner))
        if added_emb_type == "prd":
            self.prd_embedding: nn.Parameter | None = nn.Parameter(torch.zeros(1, 1, inner))
        elif added_emb_type is None:
            self.prd_embedding = None
        else:
            raise OviError(f"ECLIPSE prior config: unsupported added_emb_type {added_emb_type!r}")
        self.transformer_blocks = nn.ModuleList(
            [_Block(inner, num_attention_heads, attention_head_dim, dropout) for _ in range(num_layers)]
        )
        self.norm_in = _norm_or_none(norm_in_type, inner, "norm_in_type")
        self.norm_out = nn.LayerNorm(inner)
        self.proj_to_clip_embeddings = nn.Linear(inner, clip_dim)
        length = num_embeddings + additional_embeddings
        causal = torch.full((length, length), _MASK_VALUE).triu_(1)
        self.register_buffer("causal_attention_mask", causal[None], persistent=False)
        # Present in the checkpoint; ECLIPSE's pipeline does not apply them to its output.
        self.clip_mean = nn.Parameter(torch.zeros(1, clip_dim))
        self.clip_std = nn.Parameter(torch.zeros(1, clip_dim))

    def forward(
        self,
        hidden_states: Tensor,
        proj_embedding: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """`[B, D]` image embeddings from noise `[B, D]`, text embeds `[B, D]`, hidden states `[B, L, D]`."""
        b = hidden_states.shape[0]
        if self.embedding_proj_norm is not None:
            proj_embedding = self.embedding_proj_norm(proj_embedding)
        parts = []
        if self.encoder_hidden_states_proj is not None:
            if encoder_hidden_states is None:
                raise ValueError("this ECLIPSE prior needs encoder_hidden_states")
            parts.append(self.encoder_hidden_states_proj(encoder_hidden_states))
        parts.append(self.embedding_proj(proj_embedding)[:, None, :])
        parts.append(self.proj_in(hidden_states)[:, None, :])
        if self.prd_embedding is not None:
            parts.append(self.prd_embedding.to(hidden_states.dtype).expand(b, -1, -1))
        tokens = torch.cat(parts, dim=1)
        if tokens.shape[1] != self.positional_embedding.shape[1]:
            raise ValueError(f"ECLIPSE prior: {tokens.shape[1]} tokens for {self.positional_embedding.shape[1]} "
                             "positions (the text must have num_embeddings tokens)")
        tokens = tokens + self.positional_embedding.to(tokens.dtype)

        mask = None
        if attention_mask is not None:
            mask = (1.0 - attention_mask.to(tokens.dtype)) * _MASK_VALUE
            mask = F.pad(mask, (0, self.additional_embeddings), value=0.0)
            mask = (mask[:, None, :] + self.causal_attention_mask.to(tokens.dtype))[:, None]  # [B, 1, N, N]
        if self.norm_in is not None:
            tokens = self.norm_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, mask)
        tokens = self.norm_out(tokens)
        # the prd token when there is one, else the noise token: the last one either way
        return self.proj_to_clip_embeddings(tokens[:, -1])


def _norm_or_none(kind: str | None, dim: int, key: str) -> nn.LayerNorm | None:
    if kind is None:
        return None
    if kind == "layer":
        return nn.LayerNorm(dim)
    raise OviError(f"ECLIPSE prior config: unsupported {key} {kind!r}")


def find_eclipse_files(root: Path) -> tuple[Path, Path]:
    """(config.json, weights) in an ECLIPSE repo folder: at its root (the hub layout) or in `prior/`."""
    for folder in (root, root / "prior"):
        config = folder / "config.json"
        if config.is_file():
            for name in ECLIPSE_WEIGHTS:
                if (folder / name).is_file():
                    return config, folder / name
            raise OviError(f"ECLIPSE prior folder {str(folder)!r} has config.json but no "
                           f"{' or '.join(ECLIPSE_WEIGHTS)}")
    raise OviError(f"ECLIPSE prior model {str(root)!r} has no config.json (expected the layout of "
                   f"{DEFAULT_ECLIPSE_MODEL}: config.json + diffusion_pytorch_model.safetensors)")


def load_eclipse_prior(source: str, device: torch.device, dtype: torch.dtype) -> EclipsePriorTransformer:
    """Load ECLIPSE's prior from a hub id or a folder in the published layout."""
    root = resolve_model_dir(source, what="ECLIPSE prior", flag="--prior-model")
    config_path, weights_path = find_eclipse_files(root)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OviError(f"cannot read ECLIPSE prior config {str(config_path)!r}: {exc}") from exc
    if not isinstance(config, dict):
        raise OviError(f"ECLIPSE prior config {str(config_path)!r} is not a JSON object")
    if "time_embed_dim" in config or "time_embed_act_fn" in config:
        raise OviError(f"{source!r} is a diffusion PriorTransformer with a timestep embedding, not ECLIPSE "
                       "(use --prior kandinsky for the Kandinsky 2.2 prior)")
    kwargs = {k: config[k] for k in ECLIPSE_CONFIG_KEYS if k in config}
    model = EclipsePriorTransformer(**kwargs)
    try:
        if weights_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights_path))
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OviError(f"cannot load ECLIPSE prior weights from {source!r}: {first}") from exc
    weight_dtype = dtype if device.type != "cpu" else torch.float32
    return model.to(device, weight_dtype).eval().requires_grad_(False)


def check_text_fits(model: EclipsePriorTransformer, encoders: Encoders, hidden: int, length: int) -> None:
    """The prior was trained on one text tower: its widths and token count must match ours."""
    emb = encoders.embed_dim
    if emb != model.embedding_dim or (model.encoder_hidden_states_proj is not None and hidden != model.embedding_dim):
        raise OviError(
            f"the ECLIPSE prior expects {model.embedding_dim}-d text embeddings and hidden states, but the "
            f"encoder gives {emb}-d embeddings and {hidden}-d hidden states (use the ViT-bigG-14 encoders "
            "of kandinsky-community/kandinsky-2-2-prior)"
        )
    if model.encoder_hidden_states_proj is not None and length != model.num_embeddings:
        raise OviError(f"the ECLIPSE prior expects {model.num_embeddings} text tokens, the encoder's tokenizer "
                       f"pads to {length}")


def seeded_normal(seeds: list[int], dim: int) -> Tensor:
    """`[B, dim]` float32 standard normal rows, row b from a CPU generator seeded with `seeds[b]`."""
    rows = [torch.randn(1, dim, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
    return torch.cat(rows)


# ---- the priors --------------------------------------------------------------------------------
class EclipsePrior(Prior):
    """ECLIPSE: one forward pass of a 33M-parameter non-diffusion prior (no guidance)."""

    name = "eclipse"
    description = "ECLIPSE prior (ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior), one forward pass"

    def __init__(self) -> None:
        self._model: EclipsePriorTransformer | None = None
        self._key: tuple | None = None

    def model_source(self, settings: Any) -> str:
        return getattr(settings, "prior_model", None) or DEFAULT_ECLIPSE_MODEL

    def load(self, settings: Any, encoders: Encoders) -> float:
        """Load the module once per (source, device, dtype); returns the seconds spent loading."""
        source = self.model_source(settings)
        key = (source, str(encoders.device), encoders.dtype)
        if self._model is not None and self._key == key:
            return 0.0
        t = time.perf_counter()
        self._model = load_eclipse_prior(source, encoders.device, encoders.dtype)
        self._key = key
        return time.perf_counter() - t

    @torch.no_grad()
    def embed(self, job: PriorJob) -> PriorOutput:
        load_s = self.load(job.settings, job.encoders)
        model = self._model
        assert model is not None
        text = job.text
        check_text_fits(model, job.encoders, text.last_hidden_state.shape[-1], text.last_hidden_state.shape[1])
        device = job.encoders.device
        wdtype = next(model.parameters()).dtype
        noise = seeded_normal(job.seeds, model.embedding_dim).to(device, wdtype)
        out = model(
            noise,
            proj_embedding=text.text_embeds.to(device, wdtype),
            encoder_hidden_states=text.last_hidden_state.to(device, wdtype),
            attention_mask=text.attention_mask.to(device),
        ).float()
        source = self.model_source(job.settings)
        records = [{"prior_model": source, "prior_load_s": load_s if b == 0 else 0.0}
                   for b in range(len(job.prompts))]
        return PriorOutput(out, records)


class KandinskyPrior(Prior):
    """Kandinsky 2.2's 1B diffusion prior through diffusers' `KandinskyV22PriorPipeline`."""

    name = "kandinsky"
    description = "Kandinsky 2.2 diffusion prior (KandinskyV22PriorPipeline; --prior-steps, --prior-guidance)"

    def __init__(self) -> None:
        self._pipe: Any = None
        self._key: tuple | None = None
        self.source: str | None = None

    @staticmethod
    def model_source(settings: Any) -> str:
        """`--prior-model`; else the encoder folder when it holds `prior/` and `scheduler/`; else the hub id."""
        explicit = getattr(settings, "prior_model", None)
        if explicit:
            return explicit
        enc = Path(str(getattr(settings, "encoder_model", ""))).expanduser()
        if enc.is_dir() and all((enc / s).is_dir() for s in KANDINSKY_PRIOR_SUBFOLDERS):
            return str(enc)
        return DEFAULT_KANDINSKY_PRIOR_MODEL

    def load(self, settings: Any, encoders: Encoders) -> float:
        source = self.model_source(settings)
        key = (source, str(encoders.device), encoders.dtype, id(encoders))
        if self._pipe is not None and self._key == key:
            return 0.0
        t = time.perf_counter()
        self._pipe = build_kandinsky_prior(source, encoders)
        self._key = key
        self.source = source
        return time.perf_counter() - t

    @torch.no_grad()
    def embed(self, job: PriorJob) -> PriorOutput:
        load_s = self.load(job.settings, job.encoders)
        opts = dict(getattr(job.settings, "prior_options", {}) or {})
        steps = int(opts.get("steps", 25))
        guidance = float(opts.get("guidance_scale", 4.0))
        if steps < 1:
            raise OviError("--prior-steps must be >= 1")
        if not guidance >= 0:
            raise OviError("--prior-guidance must be >= 0")
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in job.seeds]
        out = self._pipe(
            prompt=list(job.prompts), num_inference_steps=steps, guidance_scale=guidance,
            generator=generators, output_type="pt",
        )
        embeds = out.image_embeds.float()
        records = [{"prior_model": self.source, "prior_steps": steps, "prior_guidance": guidance,
                    "prior_load_s": load_s if b == 0 else 0.0} for b in range(len(job.prompts))]
        return PriorOutput(embeds, records)


def build_kandinsky_prior(source: str, encoders: Encoders) -> Any:
    """A `KandinskyV22PriorPipeline` with the prior and scheduler from `source`.

    The CLIP towers, tokenizer and image processor are shared with `encoders` when `source` is the
    encoder's own folder, or holds no `text_encoder/`; otherwise the prior repo's own text tower
    and tokenizer are loaded (the prior was trained on them).
    """
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler

    root = resolve_model_dir(source, what="Kandinsky prior", flag="--prior-model",
                             subfolders=KANDINSKY_PRIOR_SUBFOLDERS)
    device = encoders.device
    weight_dtype = encoders.dtype if device.type != "cpu" else torch.float32
    text_encoder, tokenizer = encoders.text_encoder, encoders.tokenizer
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prior = PriorTransformer.from_pretrained(root / "prior", torch_dtype=weight_dtype)
            scheduler = UnCLIPScheduler.from_pretrained(root / "scheduler")
            if _is_other_repo(root, encoders) and (root / "text_encoder").is_dir() and (root / "tokenizer").is_dir():
                from transformers import CLIPTextModelWithProjection, CLIPTokenizer

                text_encoder = CLIPTextModelWithProjection.from_pretrained(root / "text_encoder", dtype=weight_dtype)
                text_encoder = text_encoder.to(device).eval().requires_grad_(False)
                tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
    except (OSError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OviError(f"cannot load Kandinsky prior from {source!r}: {first}") from exc
    width = int(text_encoder.config.hidden_size)
    if int(prior.config.embedding_dim) != encoders.embed_dim or width != int(prior.config.embedding_dim):
        raise OviError(f"the Kandinsky prior in {source!r} works on {prior.config.embedding_dim}-d embeddings; the "
                       f"text tower gives {text_encoder.config.projection_dim}-d embeddings and {width}-d states")
    pipe = KandinskyV22PriorPipeline(
        prior=prior.to(device).eval().requires_grad_(False), image_encoder=encoders.image_encoder,
        text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        image_processor=encoders.image_processor,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _is_other_repo(root: Path, encoders: Encoders) -> bool:
    try:
        enc_root = resolve_model_dir(encoders.source, what="encoder", flag="--encoder-model")
    except OviError:
        return True
    return root.resolve() != Path(enc_root).resolve()


@hookimpl
def register_priors(register):
    register(EclipsePrior)
    register(KandinskyPrior)
