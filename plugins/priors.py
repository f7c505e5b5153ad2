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
        from ovi_cli.devices import resolve_dtype
        from ovi_cli.engine import optimize
        from ovi_cli.pseudo_tokens import ovi_forward

        s = self.settings  # a GenSettings: it is an OviSettings, passed to the engine as it is
        enc = job.encoders
        # the one dtype policy; OVI's loop may use bf16 on a CPU where that was measured faster,
        # through a copy of the vision tower with bf16 Linear weights (the same numbers, cast once)
        dtype = resolve_dtype(s.dtype, enc.device, ovi_token_width=enc.token_width)
        result = optimize(
            ovi_forward(enc.image_encoder, dtype),
            job.text.text_embeds,
            token_width=enc.token_width,
            seeds=job.seeds,
            settings=s,
            constraints=job.constraints,
            device=enc.device,
            dtype=dtype,
            on_progress=job.on_progress,
            on_warning=self._warn_once,
        )
        final_embeds = result.image_embeds
        reports = [c.report(final_embeds) for c in job.constraints]
        records = []
        for b in range(len(job.prompts)):
            records.append({
                "steps": s.steps,
                "schedule": s.schedule if isinstance(s.schedule, str) else s.schedule.name,
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

    def _warn_once(self, message: str) -> None:
        """One warning per distinct message (e.g. a --compile fallback), not one per batch."""
        warned = self.__dict__.setdefault("_warned", set())
        if message not in warned:
            warned.add(message)
            self.context.warn(message)


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
