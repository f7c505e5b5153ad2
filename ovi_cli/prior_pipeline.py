"""`OviPriorPipeline`: OVI where diffusers users work, in place of `KandinskyV22PriorPipeline`.

    import torch
    from diffusers import KandinskyV22Pipeline
    from ovi_cli import OviPriorPipeline

    prior = OviPriorPipeline.from_pretrained("kandinsky-community/kandinsky-2-2-prior").to("cuda")
    decoder = KandinskyV22Pipeline.from_pretrained("kandinsky-community/kandinsky-2-2-decoder").to("cuda")
    image_embeds, negative_image_embeds = prior("a red cat", generator=torch.Generator().manual_seed(0),
                                                return_dict=False)
    image = decoder(image_embeds=image_embeds, negative_image_embeds=negative_image_embeds).images[0]

The arguments and the output are `KandinskyV22PriorPipeline`'s where they apply
(`KandinskyPriorPipelineOutput(image_embeds, negative_image_embeds)`, `[B * num_images_per_prompt, D]`
each, a tuple with `return_dict=False`); OVI's own settings (`steps`, `tokens`, `constraints`,
`stats`, `schedule`, `prior`, `options`, ... every `GenSettings` field) are keyword arguments of
`from_pretrained` (the defaults) and of each call (that call only). It runs `OviPipeline` with the
`embeds` decoder, so an embedding equals what `ovi gen` computes for the same settings and seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

import torch

from ovi_cli.api import Reporter
from ovi_cli.errors import OviError
from ovi_cli.pipeline import OviPipeline
from ovi_cli.settings import DEFAULT_ENCODER_MODEL, GenSettings

_FIELDS = frozenset(f.name for f in fields(GenSettings))


def seeds_from(generator: Any, rows: int, default: int) -> list[int]:
    """One OVI seed per output row: a generator's `initial_seed()` plus the row (`ovi gen --prompts` gives
    line i seed + i); a list of generators gives one each; without a generator, `default` + row."""
    if generator is None:
        return [default + r for r in range(rows)]
    if isinstance(generator, (list, tuple)):
        if len(generator) != rows:
            raise OviError(f"got {len(generator)} generators for {rows} images (prompts x num_images_per_prompt)")
        return [int(g.initial_seed()) for g in generator]
    if not isinstance(generator, torch.Generator):
        raise OviError(f"generator must be a torch.Generator or a list of them, not {type(generator).__name__}")
    base = int(generator.initial_seed())
    return [base + r for r in range(rows)]


class OviPriorPipeline:
    """Text -> CLIP image embeddings with OVI (or another registered prior), shaped like diffusers' prior."""

    def __init__(self, settings: GenSettings, *, reporter: Reporter | None = None, torch_dtype: Any = None) -> None:
        self.settings = replace(settings, decoder="embeds")
        self.reporter = reporter or Reporter()
        self.torch_dtype = torch_dtype
        self.encoders: Any = None
        self._stores: dict[Any, Any] = {}  # by the `stats` setting: stores opened once, shared across calls
        self._pipes: dict[str, OviPipeline] = {}

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str = DEFAULT_ENCODER_MODEL,
        *,
        torch_dtype: torch.dtype | None = None,
        reporter: Reporter | None = None,
        **settings: Any,
    ) -> OviPriorPipeline:
        """The CLIP towers from a hub id or folder (Kandinsky 2.2 prior layout by default; `encoder_family=`
        another), on the CPU until `.to(device)`; `settings` are `GenSettings` fields (`steps`,
        `constraints`, `stats`, `prior`, `options`, ...). Everything is checked now and the towers load now."""
        unknown = sorted(set(settings) - _FIELDS)
        if unknown:
            raise OviError(f"unknown OVI setting(s): {', '.join(unknown)} (settings are GenSettings fields)")
        settings.setdefault("device", "cpu")
        if torch_dtype is not None:
            settings["dtype"] = str(torch_dtype).replace("torch.", "")
        pipe = cls(GenSettings(encoder_model=str(pretrained_model_name_or_path), **settings),
                   reporter=reporter, torch_dtype=torch_dtype)
        pipe.loaded(pipe.settings)
        return pipe

    # ---- diffusers' conveniences --------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.pipeline(self.settings).device

    @property
    def dtype(self) -> torch.dtype:
        return self.torch_dtype or torch.float32

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> OviPriorPipeline:
        """Move to `device` (and compute in `dtype`); returns self, as diffusers' `.to` does."""
        changes: dict[str, Any] = {}
        if device is not None:
            changes["device"] = str(device)
        if dtype is not None:
            changes["dtype"] = str(dtype).replace("torch.", "")
            self.torch_dtype = dtype
        self.settings = replace(self.settings, **changes)
        self._pipes.clear()  # constraints hold tensors on the old device: rebuilt on the next call
        self._stores.clear()
        if self.encoders is not None and device is not None:
            self.encoders.to(self.pipeline(self.settings).device)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Accepted for diffusers compatibility; progress goes through the `reporter`."""

    # ---- the OviPipeline per settings ---------------------------------------------------------
    def pipeline(self, settings: GenSettings) -> OviPipeline:
        """The `OviPipeline` of `settings` (made once; checks everything, loads nothing)."""
        key = repr(settings)
        if key not in self._pipes:
            self._pipes[key] = OviPipeline(settings, reporter=self.reporter)
        return self._pipes[key]

    def loaded(self, settings: GenSettings) -> OviPipeline:
        """The `OviPipeline` of `settings`, loaded, sharing the towers and the stores already loaded."""
        pipe = self.pipeline(settings)
        pipe.load(encoders=self.encoders, store=self._stores.get(settings.stats))
        self.encoders = pipe.encoders
        if pipe.store is not None:
            self._stores.setdefault(settings.stats, pipe.store)
        return pipe

    def _settings_for(self, overrides: dict[str, Any]) -> GenSettings:
        unknown = sorted(set(overrides) - _FIELDS)
        if unknown:
            raise OviError(f"unknown argument(s): {', '.join(unknown)} (OVI settings are GenSettings fields)")
        return replace(self.settings, **overrides, decoder="embeds") if overrides else self.settings

    # ---- the call -----------------------------------------------------------------------------
    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        guidance_scale: float | None = None,
        output_type: str = "pt",
        return_dict: bool = True,
        **settings: Any,
    ) -> Any:
        """Image embeddings for `prompt`, as `KandinskyV22PriorPipeline.__call__` returns them.

        Args:
            prompt: the prompt or prompts.
            negative_prompt: embedded by the same prior with the same seeds, as the trained prior
                embeds it; without one, the negative is the settings' `negative` (the embedding of a
                mean-grey image, what diffusers' prior returns then).
            num_images_per_prompt: rows per prompt (consecutive, as diffusers repeats them), each
                with its own seed.
            num_inference_steps: OVI's `steps` (for `prior="kandinsky"`: its denoising steps).
            generator: seeds the pseudo-tokens: `generator.initial_seed()` for the first row, + 1 for
                each next row (as `ovi gen --prompts` seeds its lines); a list: one per row.
            latents: not used by OVI (refused when given: its start is seeded pseudo-tokens).
            guidance_scale: the `kandinsky` prior's guidance (OVI has none).
            output_type: "pt" (tensors) or "np".
            return_dict: `KandinskyPriorPipelineOutput` when True, else `(image_embeds, negative_image_embeds)`.
            settings: any `GenSettings` field for this call (`constraints=["nn:0.3"]`, `stats=`,
                `prior="eclipse"`, `steps=`, `options={"nn": {"k": 3}}`, ...).
        """
        from diffusers.pipelines.kandinsky import KandinskyPriorPipelineOutput

        if latents is not None:
            raise OviError("latents: OVI starts from seeded pseudo-tokens, not latents; pass generator= instead")
        if output_type not in ("pt", "np"):
            raise OviError(f"output_type must be 'pt' or 'np' (got {output_type!r})")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise OviError("num_images_per_prompt must be an integer >= 1")
        s = self._settings_for(dict(settings))
        s = self._diffusers_arguments(s, num_inference_steps, guidance_scale)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        seeds = seeds_from(generator, len(rows), s.seed)
        pipe = self.loaded(s)
        image_embeds = pipe.embed(rows, seeds).image_embeds
        if negative_prompt is None:
            negative = pipe.negative_embedding().expand(len(rows), -1).clone()
        else:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(negatives) != len(prompts):
                raise OviError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
            negative = pipe.embed([n for n in negatives for _ in range(num_images_per_prompt)], seeds).image_embeds
        dtype = self.torch_dtype or torch.float32
        image_embeds = image_embeds.to(pipe.device, dtype)
        negative = negative.to(pipe.device, dtype)
        if output_type == "np":
            image_embeds, negative = image_embeds.float().cpu().numpy(), negative.float().cpu().numpy()
        if not return_dict:
            return image_embeds, negative
        return KandinskyPriorPipelineOutput(image_embeds=image_embeds, negative_image_embeds=negative)

    @staticmethod
    def _diffusers_arguments(s: GenSettings, steps: int | None, guidance: float | None) -> GenSettings:
        """diffusers' `num_inference_steps` / `guidance_scale` mapped onto the chosen prior's settings."""
        if steps is None and guidance is None:
            return s
        if s.prior == "kandinsky":
            opts = {k: dict(v) for k, v in s.options.items()}
            mine = opts.setdefault("kandinsky", {})
            if steps is not None:
                mine["steps"] = steps
            if guidance is not None:
                mine["guidance"] = guidance
            return replace(s, options=opts)
        if guidance is not None:
            raise OviError(f"guidance_scale: prior {s.prior!r} has no guidance (the kandinsky prior has)")
        return replace(s, steps=steps) if s.prior == "ovi" else s
