"""`ovi gen` as a library: prompts -> prior -> image embeddings -> decoder -> files.

    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.settings import GenSettings
    pipe = OviPipeline(GenSettings(steps=300, constraints=["nn"]))
    results = pipe.generate(["blue old car on a beach"], outs=["car.png"])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ConstraintSpec, PluginContext, PriorJob, Reporter, resolve_options
from ovi_cli.devices import resolve_device, resolve_dtype
from ovi_cli.encoders import Encoders, TextEncoding
from ovi_cli.errors import OviError
from ovi_cli.hub import ModelRef, check_models
from ovi_cli.losses import cosine
from ovi_cli.outputs import atomic_outputs, finite_or_none, result_paths
from ovi_cli.plugin_checks import check_prior_output, start_plugin
from ovi_cli.plugins import Registry, get_registry
from ovi_cli.png_recipe import write_png
from ovi_cli.prompts import validate_prompts
from ovi_cli.settings import NEGATIVE_KINDS, GenSettings
from ovi_cli.version import ovi_version

OPTION_KINDS = ("prior", "constraint", "decoder", "encoder_family")  # plugin kinds that declare `--option`s


@dataclass
class EmbedBatch:
    prompts: list[str]
    seeds: list[int]
    text: TextEncoding
    image_embeds: Tensor  # [B, D] float32, CPU
    negative_image_embeds: Tensor  # [B, D] float32, CPU
    records: list[dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)


def check_plugin_options(settings: GenSettings, registry: Registry) -> dict[str, dict[str, Any]]:
    """Every `--option PLUGIN.KEY=VALUE` checked against the plugin that declares it.

    Returns the options resolved (defaults applied) for each plugin named in `settings.options`.
    """
    out = {}
    for owner, given in settings.options.items():
        cls = next((registry.entries[k][owner].cls for k in OPTION_KINDS if owner in registry.entries[k]), None)
        if cls is None:
            known = sorted({n for k in OPTION_KINDS for n in registry.entries[k]})
            raise OviError(f"--option {owner}.*: no prior, constraint or decoder is named {owner!r} "
                           f"(known: {', '.join(known)})")
        out[owner] = resolve_options(cls, owner, given)
    return out


def _preset_decoder(cls: type) -> str | None:
    """The decoder a model preset selects (None when it selects none, or cannot say here)."""
    try:
        return cls().overrides().get("decoder")
    except Exception:  # noqa: BLE001 - a preset that cannot resolve here (e.g. toy models missing) names none
        return None


def truncation_warning(prompt: str, count: int, limit: int) -> str:
    """The one line shown when the text encoder reads only the first `limit` of a prompt's `count` tokens."""
    shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    return (f"prompt {shown!r} truncated: it is {count} tokens and the text encoder reads {limit} (start and "
            "end tokens and word pieces count)")


class OviPipeline:
    """Loads the encoders, the prior, its constraints and the decoder once; runs batches."""

    def __init__(
        self,
        settings: GenSettings,
        *,
        reporter: Reporter | None = None,
        registry: Registry | None = None,
        encoders: Encoders | None = None,
    ) -> None:
        self.settings = settings
        self.reporter = reporter or Reporter()
        self.registry = registry or get_registry()
        self._validate()
        check_plugin_options(settings, self.registry)
        self.device = resolve_device(settings.device)
        self.dtype = resolve_dtype(settings.dtype, self.device)
        self.prior = self._start("prior", settings.prior)
        self.decoder = self._start("decoder", settings.decoder)
        self.encoder_family = self._start_encoder_family()
        self.specs = [ConstraintSpec.parse(c) for c in settings.constraints]
        for spec in self.specs:
            self.registry.get("constraint", spec.name)
        if self.specs and not self.prior.uses_constraints:
            raise OviError(f"prior {settings.prior!r} takes no constraints (--constraint is for ovi)")
        self.encoders = encoders
        self.constraints: list[Constraint] | None = None
        self.store: Any = None  # the stats store, once a constraint (or a caller) opened one
        self._decoder_loaded = False
        self._negative: Tensor | None = None
        self.timings: dict[str, float] = {}

    def plugin_context(self, name: str, cls: type, **extra: Any) -> PluginContext:
        """The one context a plugin of this run is built with: its options resolved, the run's settings."""
        options = resolve_options(cls, name, self.settings.options_for(name))
        return PluginContext(name=name, settings=self.settings, options=options, device=self.device,
                             dtype=self.dtype, reporter=self.reporter, **extra)

    def _start(self, kind: str, name: str, **extra: Any) -> Any:
        cls = self.registry.get(kind, name)
        context = self.plugin_context(name, cls, **extra)
        return start_plugin(kind, name, cls, lambda: cls(context))

    @property
    def prior_options(self) -> dict[str, Any]:
        return self.prior.options

    def _validate(self) -> None:
        self.settings.check()
        if self.settings.negative not in NEGATIVE_KINDS:
            raise OviError(f"--negative must be one of {', '.join(NEGATIVE_KINDS)}")

    def _start_encoder_family(self) -> Any:
        """The encoder family that loads the CLIP towers; a decoder that needs another one is refused."""
        s = self.settings
        needed = getattr(self.decoder, "encoder_family", None)
        if needed and needed != s.encoder_family:
            presets = [f"--model {n}" for n in self.registry.names("model")
                       if _preset_decoder(self.registry.get("model", n)) == s.decoder]
            raise OviError(f"decoder {s.decoder!r} works in the CLIP space of encoder family {needed!r}, but the "
                           f"encoder family is {s.encoder_family!r}; use {' or '.join(presets) or 'its model preset'}, "
                           f"or --encoder-family {needed} with a matching --encoder-model")
        return self._start("encoder_family", s.encoder_family)

    def required_models(self) -> list[ModelRef]:
        """Every model this pipeline loads: encoders, prior, decoder (resolved before loading any)."""
        refs = [] if self.encoders is not None else self.encoder_family.required_models()
        refs += self.prior.required_models()
        if not self._decoder_loaded:
            refs += self.decoder.required_models()
        return refs

    @property
    def needs_store(self) -> bool:
        """True when a constraint of this pipeline reads a stats store."""
        return any(self.registry.get("constraint", s.name).needs_stats for s in self.specs)

    @property
    def produces_images(self) -> bool:
        return bool(self.decoder.produces_images)

    # ---- loading ------------------------------------------------------------------------------
    def load(self, *, encoders: Encoders | None = None, store: Any = None) -> None:
        """Load everything a run needs (idempotent); slow on real models.

        `encoders` and `store` already loaded elsewhere (e.g. by another pipeline) are used
        instead of loading them again.
        """
        if encoders is not None and self.encoders is None:
            self.encoders = encoders
        if store is not None and self.store is None:
            self.store = store
        if self.encoders is None or not self._decoder_loaded:
            check_models(self.required_models())
        if self.encoders is None:
            self.reporter.stage(f"loading encoders from {self.settings.encoder_model}")
            t = time.perf_counter()
            self.encoders = self.encoder_family.load_encoders(self.settings.encoder_model)
            self.timings["load_encoders_s"] = time.perf_counter() - t
        if self.constraints is None:
            self.constraints = self._build_constraints()
        if not self._decoder_loaded:
            self.reporter.stage(f"loading decoder {self.settings.decoder}")
            t = time.perf_counter()
            start_plugin("decoder", self.settings.decoder, self.decoder, self.decoder.load)
            self._decoder_loaded = True
            self.timings["load_decoder_s"] = time.perf_counter() - t

    def open_store(self) -> Any:
        """The stats store (`--stats`, or the newest one of this encoder), opened once."""
        if self.store is None:
            from ovi_stats.store import open_store_for

            self.reporter.stage("loading image statistics")
            self.store = open_store_for(self.settings.stats, self.encoders, warn=self.reporter.warn)
        return self.store

    def constraint_context(self) -> PluginContext:
        """The context of a weight-0 tracker of this pipeline (no options of its own)."""
        assert self.encoders is not None
        return PluginContext(settings=self.settings, device=self.device, dtype=self.dtype, reporter=self.reporter,
                             encoders=self.encoders, store=self.store, weight=0.0)

    def _build_constraints(self) -> list[Constraint]:
        if any(self.registry.get("constraint", s.name).needs_stats for s in self.specs):
            self.open_store()
        return [self._start("constraint", spec.name, encoders=self.encoders, store=self.store, weight=spec.weight)
                for spec in self.specs]

    def negative_embedding(self) -> Tensor:
        """`[1, D]`: the zero-image embedding (default) or a zero tensor."""
        if self._negative is None:
            assert self.encoders is not None
            if self.settings.negative == "zeros":
                self._negative = torch.zeros(1, self.encoders.embed_dim)
            else:
                self._negative = self.encoders.zero_image_embeds().cpu()
        return self._negative

    # ---- running ------------------------------------------------------------------------------
    def embed(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int] | None = None,
        *,
        trackers: Sequence[Constraint] = (),
    ) -> EmbedBatch:
        """Image embeddings for a batch of prompts (no decoding).

        `trackers`: extra constraints for this call only, typically weight 0 (they record a
        value at every OVI step without changing the result; `ovi compare` draws them).
        """
        prompts = validate_prompts(prompts)
        seeds = list(seeds) if seeds is not None else [self.settings.seed] * len(prompts)
        if len(seeds) != len(prompts):
            raise OviError("need one seed per prompt")
        self.load()
        assert self.encoders is not None and self.constraints is not None
        timings: dict[str, float] = {}
        t = time.perf_counter()
        text = self.encoders.encode_text(prompts)
        timings["text_s"] = time.perf_counter() - t
        for p, cut, count in zip(prompts, text.truncated, text.token_counts):
            if cut:
                self.reporter.warn(truncation_warning(p, count, self.encoders.max_text_tokens))
        self.reporter.stage(f"prior {self.settings.prior}")
        t = time.perf_counter()
        job = PriorJob(
            prompts=prompts, text=text, encoders=self.encoders, seeds=seeds,
            constraints=[*self.constraints, *trackers], on_progress=self.reporter.ovi_progress,
        )
        out = self.prior.embed(job)
        check_prior_output(self.settings.prior, self.prior, out, prompts, self.encoders.embed_dim)
        timings["prior_s"] = time.perf_counter() - t
        image_embeds = out.image_embeds.detach().float().cpu()
        negative = self.negative_embedding().expand(len(prompts), -1).clone()
        return EmbedBatch(prompts, seeds, text, image_embeds, negative, out.records, timings)

    def decode(self, batch: EmbedBatch) -> list[Any]:
        self.load()
        t = time.perf_counter()
        # a decoder that also reads the text (`uses_prompts`, e.g. SDXL + IP-Adapter) gets the prompts
        extra = {"prompts": list(batch.prompts)} if getattr(self.decoder, "uses_prompts", False) else {}
        images = self.decoder.decode(
            batch.image_embeds.to(self.device), batch.negative_image_embeds.to(self.device),
            batch.seeds, on_step=self.reporter.decode_progress, **extra,
        )
        batch.timings["decode_s"] = time.perf_counter() - t
        return images

    def generate(
        self,
        prompts: Sequence[str],
        outs: Sequence[Path | str],
        *,
        seeds: Sequence[int] | None = None,
        save_embedding: bool = False,
    ) -> list[dict[str, Any]]:
        """Embed, decode and write each prompt's files atomically; returns the sidecars."""
        if len(outs) != len(prompts):
            raise OviError("need one output path per prompt")
        start = time.perf_counter()
        batch = self.embed(prompts, seeds)
        images = self.decode(batch) if self.decoder.produces_images else []
        sidecars = []
        for i, out in enumerate(outs):
            paths = result_paths(Path(out))
            sidecar = self.sidecar(batch, i)
            sidecar["timings"]["total_s"] = time.perf_counter() - start
            keep_embedding = save_embedding or not self.decoder.produces_images
            files = {"sidecar": str(paths["sidecar"])}
            if images:
                files["image"] = str(paths["image"])
            if keep_embedding:
                files["embedding"] = str(paths["embedding"])
            sidecar["files"] = files
            with atomic_outputs() as staging:
                if images:
                    # the recipe rides inside the PNG (`ovi gen --from IMAGE` makes it again)
                    staging.write_with(paths["image"], lambda p, im=images[i], sc=sidecar: write_png(p, im, sc))
                if keep_embedding:
                    staging.write_with(paths["embedding"], lambda p, i=i: save_embeddings(p, batch, i))
                staging.write_json(paths["sidecar"], sidecar)
            sidecars.append(sidecar)
        return sidecars

    def sidecar(self, batch: EmbedBatch, i: int) -> dict[str, Any]:
        """The JSON record of one prompt's result."""
        s = self.settings
        emb = batch.image_embeds[i : i + 1]
        rec = dict(batch.records[i]) if batch.records else {}
        history = rec.pop("history", {})
        text_cos = float(cosine(emb, batch.text.text_embeds[i : i + 1].cpu())[0])
        assert self.encoders is not None
        return {
            "prompt": batch.prompts[i],
            "prior": s.prior,
            "decoder": s.decoder,
            "constraints": [
                {"name": c.name, "weight": c.weight} for c in (self.constraints or [])
            ],
            "tokens": s.tokens,
            "steps": s.steps,
            "lr": s.lr,
            "weight_decay": s.weight_decay,
            "seed": batch.seeds[i],
            "text_cosine": text_cos,
            "embedding_norm": float(emb.norm()),
            "negative": s.negative,
            "truncated": bool(batch.text.truncated[i]) if batch.text.truncated else False,
            **rec,
            "options": self.options_used(),
            "decoding": self.decoding_record() if self.decoder.produces_images else None,
            "timings": {**self.timings, **batch.timings},
            "models": {
                "encoder": self.encoders.describe(),
                "decoder": self.decoder.describe(),
                "stats": getattr(self.store, "describe", lambda: None)(),
            },
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "versions": package_versions(),
            "settings": s.to_dict(),  # every setting as given: a resume compares them (ovi_cli.resume)
            "history": finite_or_none(history),  # a step whose value was not finite is null
        }


    def options_used(self) -> dict[str, dict[str, Any]]:
        """The resolved options of the prior, the constraints and the decoder (non-empty ones)."""
        out = {self.settings.prior: self.prior_options, self.settings.decoder: self.decoder.options,
               self.settings.encoder_family: self.encoder_family.options}
        for c in self.constraints or []:
            out[c.name] = c.context.options
        return {k: v for k, v in out.items() if v}

    def decoding_record(self) -> dict[str, Any]:
        """The decoding settings this decoder uses (e.g. the toy decoder ignores steps and guidance)."""
        names = {"decoder_steps": "steps"}
        return {names.get(k, k): getattr(self.settings, k) for k in self.decoder.uses_settings}


def save_embeddings(handle: IO[bytes], batch: EmbedBatch, i: int) -> None:
    """Write prompt `i`'s embeddings as safetensors to an open binary handle."""
    from safetensors.torch import save

    handle.write(save(
        {
            "image_embeds": batch.image_embeds[i : i + 1].contiguous(),
            "negative_image_embeds": batch.negative_image_embeds[i : i + 1].contiguous(),
            "text_embeds": batch.text.text_embeds[i : i + 1].cpu().contiguous(),
        },
        metadata={"prompt": batch.prompts[i]},
    ))


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"ovi": ovi_version()}
    for name in ("torch", "diffusers", "transformers", "faiss-cpu"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
