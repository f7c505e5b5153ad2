"""Built-in priors: `ovi` (optimisation-based visual inversion) and `textemb` (the text embedding).

Light on import: the engine (torch) loads when a prior first runs.
"""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_cli.api import Prior, PriorJob, PriorOutput


class OviPrior(Prior):
    """Pseudo-tokens optimised through the frozen CLIP vision tower to match the text embedding."""

    name = "ovi"
    description = "Optimization-based Visual Inversion (no trained prior)"
    uses_constraints = True

    def embed(self, job: PriorJob) -> PriorOutput:
        from ovi_cli.engine import OviSettings, auto_dtype, optimize

        s = job.settings
        settings = OviSettings(
            tokens=s.tokens, steps=s.steps, lr=s.lr, weight_decay=s.weight_decay,
            patience=s.patience, min_delta=s.min_delta, compile=bool(getattr(s, "compile", False)),
        )
        enc = job.encoders
        # `--dtype auto`: OVI's loop may use bf16 autocast on a CPU where that was measured faster
        dtype = auto_dtype(enc.device, enc.token_width) if getattr(s, "dtype", "auto") == "auto" else enc.dtype
        result = optimize(
            enc.encode_pseudo_tokens,
            job.text.text_embeds,
            token_width=enc.token_width,
            seeds=job.seeds,
            settings=settings,
            constraints=job.constraints,
            device=enc.device,
            dtype=dtype,
            on_progress=job.on_progress,
            on_warning=lambda message: self._warn_once(job, message),
        )
        final_embeds = result.image_embeds
        reports = [c.report(final_embeds) for c in job.constraints]
        records = []
        for b in range(len(job.prompts)):
            records.append({
                "steps_used": result.steps_used[b],
                "ovi_dtype": str(dtype).replace("torch.", ""),
                "compiled": result.compiled,
                "prior_text_cosine": result.text_cosine[b],
                "constraint_values": {
                    c.name: {"weight": c.weight, "final": result.constraint_finals[c.name][b],
                             **reports[k][b]}
                    for k, c in enumerate(job.constraints)
                },
                "history": result.history[b],
            })
        return PriorOutput(final_embeds, records)

    def _warn_once(self, job: PriorJob, message: str) -> None:
        """One warning per distinct message (e.g. a --compile fallback), not one per batch."""
        warned = self.__dict__.setdefault("_warned", set())
        if message not in warned:
            warned.add(message)
            job.warn(message)


class TextEmbPrior(Prior):
    """The TextEmb baseline: the CLIP text embedding passed to the decoder unchanged."""

    name = "textemb"
    description = "TextEmb baseline: the text embedding used as the image embedding"

    def embed(self, job: PriorJob) -> PriorOutput:
        return PriorOutput(job.text.text_embeds.detach().clone(), [{} for _ in job.prompts])


@hookimpl
def register_priors(register):
    register(OviPrior)
    register(TextEmbPrior)
