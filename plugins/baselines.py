"""Baseline priors: `eclipse` (ECLIPSE, a one-pass trained prior) and `kandinsky` (Kandinsky 2.2's
diffusion prior). Both map the prompt's CLIP text encoding to a CLIP image embedding, like `ovi`.

- `eclipse`: `ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior`, one forward pass of the network in
  `ovi_plugins.eclipse_net` from seeded noise, the text embedding and the text hidden states. No
  classifier-free guidance, no `clip_mean`/`clip_std` post-processing (ECLIPSE's pipeline returns
  the raw output). The text tower is ovi's encoder's (`Encoders.encode_text`), which for
  Kandinsky 2.2 is the same ViT-bigG-14 text model ECLIPSE uses. Option: `eclipse.model`.
- `kandinsky`: diffusers' `KandinskyV22PriorPipeline` with ovi's encoders. Options:
  `kandinsky.model`, `kandinsky.steps`, `kandinsky.guidance`.

This module is light (the networks load on first use), so listing plugins costs nothing.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import PluginOption, Prior, PriorJob, PriorOutput
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import ModelRef, resolve_model_dir

if TYPE_CHECKING:
    from ovi_cli.encoders import Encoders

DEFAULT_ECLIPSE_MODEL = "ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior"
DEFAULT_KANDINSKY_PRIOR_MODEL = "kandinsky-community/kandinsky-2-2-prior"
KANDINSKY_PRIOR_SUBFOLDERS = ("prior", "scheduler")


class EclipsePrior(Prior):
    """ECLIPSE: one forward pass of a 33M-parameter non-diffusion prior (no guidance)."""

    name = "eclipse"
    description = "ECLIPSE prior (ECLIPSE-Community/ECLIPSE_KandinskyV22_Prior), one forward pass"
    reference_in_compare = True
    options = (
        PluginOption("model", str, DEFAULT_ECLIPSE_MODEL, "hub id or folder of the ECLIPSE prior",
                     flag="--prior-model"),
    )

    _model: Any = None
    _key: tuple | None = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options.get("model") or DEFAULT_ECLIPSE_MODEL, "ECLIPSE prior", "--option eclipse.model")]

    def load_model(self, source: str, encoders: Encoders) -> float:
        """Load the module once per (source, device, dtype); returns the seconds spent loading."""
        from ovi_plugins.eclipse_net import load_eclipse_prior

        key = (source, str(encoders.device), encoders.dtype)
        if self._model is not None and self._key == key:
            return 0.0
        t = time.perf_counter()
        self._model = load_eclipse_prior(source, encoders.device, encoders.dtype)
        self._key = key
        return time.perf_counter() - t

    def embed(self, job: PriorJob) -> PriorOutput:
        import torch

        from ovi_plugins.eclipse_net import check_text_fits, seeded_normal

        source = self.options.get("model") or DEFAULT_ECLIPSE_MODEL
        load_s = self.load_model(source, job.encoders)
        model = self._model
        text = job.text
        check_text_fits(model, job.encoders, text.last_hidden_state.shape[-1], text.last_hidden_state.shape[1])
        device = job.encoders.device
        wdtype = next(model.parameters()).dtype
        with torch.no_grad():
            noise = seeded_normal(job.seeds, model.embedding_dim).to(device, wdtype)
            out = model(
                noise,
                proj_embedding=text.text_embeds.to(device, wdtype),
                encoder_hidden_states=text.last_hidden_state.to(device, wdtype),
                attention_mask=text.attention_mask.to(device),
            ).float()
        records = [{"prior_model": source, "prior_load_s": load_s if b == 0 else 0.0}
                   for b in range(len(job.prompts))]
        return PriorOutput(out, records)


class KandinskyPrior(Prior):
    """Kandinsky 2.2's 1B diffusion prior through diffusers' `KandinskyV22PriorPipeline`."""

    name = "kandinsky"
    description = "Kandinsky 2.2 diffusion prior (KandinskyV22PriorPipeline)"
    reference_in_compare = True
    options = (
        PluginOption("model", str, None, "hub id or folder of the prior (default: the encoder folder when "
                     "it holds prior/ and scheduler/, else kandinsky-community/kandinsky-2-2-prior)",
                     flag="--prior-model"),
        PluginOption("steps", int, 25, "denoising steps", minimum=1, flag="--prior-steps"),
        PluginOption("guidance", float, 4.0, "classifier-free guidance scale", minimum=0, flag="--prior-guidance"),
    )

    _pipe: Any = None
    _key: tuple | None = None
    source: str | None = None

    def required_models(self) -> list[ModelRef]:
        source = self.model_source(self.options.get("model"), getattr(self.settings, "encoder_model", ""))
        return [ModelRef(source, "Kandinsky prior", "--option kandinsky.model", KANDINSKY_PRIOR_SUBFOLDERS)]

    @staticmethod
    def model_source(model: str | None, encoder_model: str) -> str:
        """`model`; else the encoder folder when it holds `prior/` and `scheduler/`; else the hub id."""
        if model:
            return model
        enc = Path(str(encoder_model or "")).expanduser()
        if enc.is_dir() and all((enc / s).is_dir() for s in KANDINSKY_PRIOR_SUBFOLDERS):
            return str(enc)
        return DEFAULT_KANDINSKY_PRIOR_MODEL

    def load_model(self, source: str, encoders: Encoders) -> float:
        key = (source, str(encoders.device), encoders.dtype, id(encoders))
        if self._pipe is not None and self._key == key:
            return 0.0
        t = time.perf_counter()
        self._pipe = build_kandinsky_prior(source, encoders)
        self._key = key
        self.source = source
        return time.perf_counter() - t

    def embed(self, job: PriorJob) -> PriorOutput:
        import torch

        source = self.model_source(self.options.get("model"), getattr(self.settings, "encoder_model", ""))
        load_s = self.load_model(source, job.encoders)
        steps, guidance = int(self.options["steps"]), float(self.options["guidance"])
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in job.seeds]
        with torch.no_grad():
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

    from ovi_cli import devices

    root = resolve_model_dir(source, what="Kandinsky prior", flag="--option kandinsky.model",
                             subfolders=KANDINSKY_PRIOR_SUBFOLDERS)
    device = encoders.device
    weight_dtype = devices.weight_dtype(device, encoders.dtype)
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
        raise OviError(f"cannot load Kandinsky prior from {source!r}: {first_line(exc, with_type=False)}") from exc
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
