"""`ovi compare` as a library: several priors on the same prompt(s), one decoder seed, one table.

    from ovi_cli.compare import Comparison, parse_priors
    from ovi_cli.settings import GenSettings
    cmp = Comparison(parse_priors("textemb,ovi,ovi+nn,eclipse"), GenSettings(steps=300))
    run = cmp.run(["blue old car on a beach"], out_dir="outputs/car")

Each prior runs through its own `OviPipeline` (prior + constraints), all sharing one loaded
`Encoders`; their pipelines use the `embeds` decoder, and one extra pipeline holds the real
decoder, which decodes every prior's embedding of a prompt in one batch with the same seed, so
the images differ only by the embedding. Per prompt the folder gets `grid.png` (one labelled
cell per prior, in the order given), `<prior>.png`, `table.csv` / `table.json`,
`embeddings.safetensors` (one `[1, D]` tensor per prior, plus `text_embeds`) and, with `plot`,
`plot.png` / `history.csv`. The table's numbers are recomputed by `comparison_rows` from the
embeddings alone (and the store), so anyone can check them from `embeddings.safetensors`. With
`preference` (a `ScoreRequest`, see `ovi_cli.compare_preference`) every prior's PNG, as written, is
also scored against the prompt by each scorer named, one more column per scorer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ConstraintContext, ImageScore, Reporter
from ovi_cli.compare_report import comparison_rows, make_grid, png_with_text, summary_rows, table_csv
from ovi_cli.encoders import Encoders, TextEncoding
from ovi_cli.errors import OviError
from ovi_cli.losses import cosine
from ovi_cli.outputs import Staging, atomic_outputs, slugify
from ovi_cli.pipeline import EmbedBatch, OviPipeline, package_versions
from ovi_cli.plots import COSINE_PREFIX, has_curves, stage_history_plot
from ovi_cli.plugins import Registry, get_registry
from ovi_cli.png_recipe import write_png
from ovi_cli.prompts import validate_prompts
from ovi_cli.settings import GenSettings

if TYPE_CHECKING:
    from ovi_cli.bench.score import ScoreRequest
    from ovi_cli.compare_preference import PreferenceScorers

DEFAULT_PRIORS = "textemb,ovi,eclipse,kandinsky"


# ---- which priors ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorChoice:
    """One entry of `--priors`: `NAME` or `NAME+CONSTRAINT[:WEIGHT][+CONSTRAINT...]` (e.g. `ovi+nn`)."""

    label: str
    prior: str
    constraints: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        return slugify(self.label.replace("+", " plus ").replace(":", " "))


def parse_priors(text: str, registry: Registry | None = None) -> list[PriorChoice]:
    """Parse `--priors`; unknown names and misuse are one-line `OviError`s."""
    from ovi_cli.api import ConstraintSpec

    registry = registry or get_registry()
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise OviError("--priors is empty: name at least one prior, e.g. textemb,ovi,eclipse")
    choices: list[PriorChoice] = []
    for item in items:
        if not item:
            raise OviError(f"--priors {text!r} has an empty entry")
        name, *cons = [p.strip() for p in item.split("+")]
        known = registry.names("prior")
        if name not in known:
            raise OviError(f"unknown prior {name!r} in --priors; available: {', '.join(known)} (see `ovi plugins`)")
        cls = registry.get("prior", name)
        if cons and not getattr(cls, "uses_constraints", False):
            raise OviError(f"--priors entry {item!r}: prior {name!r} takes no constraints (only e.g. ovi+nn)")
        for c in cons:
            spec = ConstraintSpec.parse(c)
            if spec.name not in registry.names("constraint"):
                raise OviError(f"unknown constraint {spec.name!r} in --priors entry {item!r}; available: "
                               f"{', '.join(registry.names('constraint')) or 'none'}")
        label = "+".join([name, *cons])
        if any(ch.label == label for ch in choices):
            raise OviError(f"--priors names {label!r} twice")
        choices.append(PriorChoice(label, name, tuple(cons)))
    slugs = [c.slug for c in choices]
    if len(set(slugs)) != len(slugs):
        raise OviError("--priors: two entries map to the same file name; make them differ")
    return choices


# ---- OVI curves towards other priors' embeddings ----------------------------------------------
class ReferenceCosine(Constraint):
    """Weight-0 tracker: records `cos(e, reference)` at every OVI step without touching the loss."""

    name = "cos_reference"

    def __init__(self, context: ConstraintContext, label: str) -> None:
        super().__init__(replace(context, weight=0.0))
        self.name = f"{COSINE_PREFIX}{label}"  # the history key
        self.reference: Tensor | None = None  # [B, D]

    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        assert self.reference is not None
        with torch.no_grad():
            ref = self.reference.to(embeds.device)[torch.as_tensor(rows, device=embeds.device).long()]
            return cosine(embeds.detach(), ref)


# ---- running -----------------------------------------------------------------------------------
@dataclass
class PromptResult:
    prompt: str
    seed: int
    labels: list[str]
    embeds: Tensor  # [N, D]
    text: TextEncoding
    negative: Tensor  # [1, D]
    rows: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]
    histories: dict[str, dict[str, list[float]]]
    images: list[Any] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    preference: dict[str, dict[str, ImageScore]] = field(default_factory=dict)  # label -> scorer -> score


@dataclass
class CompareRun:
    results: list[PromptResult]
    summary: list[dict[str, Any]]
    files: dict[str, str]


class Comparison:
    """Loads the encoders once, one pipeline per prior choice, one decoder; compares per prompt.

    Plugin options (e.g. `eclipse.model`) come from `settings.options`, as for `ovi gen`; `preference`
    names the scorers that score every prior's image (`ovi_cli.compare_preference.preference_request`).
    """

    def __init__(
        self,
        choices: Sequence[PriorChoice],
        settings: GenSettings,
        *,
        reporter: Reporter | None = None,
        registry: Registry | None = None,
        encoders: Encoders | None = None,
        preference: ScoreRequest | None = None,
    ) -> None:
        if not choices:
            raise OviError("no prior to compare")
        self.choices = list(choices)
        self.settings = settings
        self.reporter = reporter or Reporter()
        self.registry = registry or get_registry()
        self.encoders = encoders
        self.store: Any = None
        # validate everything (names, flags) before loading anything
        self.pipes = {ch.label: OviPipeline(
            replace(settings, prior=ch.prior, constraints=list(ch.constraints), decoder="embeds"),
            reporter=self.reporter, registry=self.registry, encoders=encoders) for ch in self.choices}
        self.decoder_pipe = OviPipeline(replace(settings, prior="textemb", constraints=[]),
                                        reporter=self.reporter, registry=self.registry, encoders=encoders)
        self.trackers: dict[str, list[ReferenceCosine]] = {}
        self.preference: PreferenceScorers | None = None  # built (names, kinds, options checked) now
        if preference is not None:
            from ovi_cli.compare_preference import PreferenceScorers

            if not self.produces_images:
                raise OviError(f"--preference scores the priors' images; decoder {settings.decoder!r} makes none")
            self.preference = PreferenceScorers(preference, self.decoder_pipe.device, reporter=self.reporter,
                                                registry=self.registry)
        self._loaded = False

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.choices]

    @property
    def produces_images(self) -> bool:
        return self.decoder_pipe.produces_images

    @property
    def preference_names(self) -> list[str]:
        """The scorers of `--preference` (their columns, in order); empty without."""
        return list(self.preference.names) if self.preference is not None else []

    def load(self) -> None:
        if self._loaded:
            return
        if self.preference is not None:
            self.preference.check()  # the scorers' models and settings, before any model loads
        if self.encoders is None:
            self.reporter.stage(f"loading encoders from {self.settings.encoder_model}")
            # through the run's encoder family (the pipeline made it on its device and dtype)
            self.encoders = self.decoder_pipe.encoder_family.load_encoders(self.settings.encoder_model)
        # one stats store for every pipeline and for the table's Mahalanobis / NN columns
        if self.settings.stats or any(p.needs_store for p in self.pipes.values()):
            first = self.decoder_pipe
            first.load(encoders=self.encoders)
            self.store = first.open_store()
        references = [c for c in self.choices if self.pipes[c.label].prior.reference_in_compare]
        for ch in self.choices:
            pipe = self.pipes[ch.label]
            pipe.load(encoders=self.encoders, store=self.store)
            if pipe.prior.uses_constraints and references:
                ctx = pipe.constraint_context()
                self.trackers[ch.label] = [ReferenceCosine(ctx, r.label) for r in references]
        if self.produces_images:
            self.decoder_pipe.load(encoders=self.encoders, store=self.store)
        self._loaded = True

    def _order(self) -> list[PriorChoice]:
        """Priors without OVI history first, so OVI can track the cosine to their embeddings."""
        return sorted(self.choices, key=lambda c: bool(self.pipes[c.label].prior.uses_constraints))

    def compare(self, prompt: str, seed: int) -> PromptResult:
        """Every prior on one prompt, decoded with one seed; the table recomputed from the embeddings."""
        self.load()
        embeds: dict[str, Tensor] = {}
        records: dict[str, dict[str, Any]] = {}
        seconds: dict[str, float] = {}
        text: TextEncoding | None = None
        negative: Tensor | None = None
        for ch in self._order():
            pipe = self.pipes[ch.label]
            for tr in self.trackers.get(ch.label, []):
                ref_label = tr.name[len(COSINE_PREFIX):]
                tr.reference = embeds[ref_label].reshape(1, -1)
            self.reporter.stage(f"prior {ch.label}")
            self.reporter.new_batch(ch.label)
            batch = pipe.embed([prompt], [seed], trackers=self.trackers.get(ch.label, ()))
            rec = dict(batch.records[0]) if batch.records else {}
            embeds[ch.label] = batch.image_embeds[0]
            records[ch.label] = rec
            seconds[ch.label] = max(0.0, batch.timings.get("prior_s", 0.0) - float(rec.get("prior_load_s", 0.0)))
            text = batch.text if text is None else text
            negative = batch.negative_image_embeds[:1] if negative is None else negative
        assert text is not None and negative is not None
        labels = self.labels
        stacked = torch.stack([embeds[lab] for lab in labels])
        rows = comparison_rows(labels, stacked, text.text_embeds[0], [seconds[lab] for lab in labels], self.store)
        histories = {lab: records[lab].pop("history") for lab in labels if has_curves(records[lab].get("history"))}
        for lab in labels:
            records[lab].pop("history", None)
        result = PromptResult(prompt, seed, labels, stacked, text, negative, rows, records, histories)
        if self.produces_images:
            n = len(labels)
            batch = EmbedBatch([prompt] * n, [seed] * n, text, stacked, negative.expand(n, -1).clone(),
                               [{} for _ in labels])
            self.reporter.stage("decoding")
            result.images = self.decoder_pipe.decode(batch)
        return result

    # ---- files ---------------------------------------------------------------------------------
    def image_recipe(self, result: PromptResult, k: int) -> dict[str, Any]:
        """The sidecar of prior `k`'s image, as `ovi gen` would write it: that prior's settings and the
        decoder that decoded it (what the PNG's recipe chunk holds, for `ovi gen --from`)."""
        label = result.labels[k]
        pipe = self.pipes[label]
        batch = EmbedBatch([result.prompt], [result.seed], result.text, result.embeds[k : k + 1].cpu(),
                           result.negative, [dict(result.records[label])])
        side = pipe.sidecar(batch, 0)
        dec = self.decoder_pipe
        side["decoder"] = dec.settings.decoder
        side["decoding"] = dec.decoding_record()
        side["models"] = {**side["models"], "decoder": dec.decoder.describe()}
        side["settings"] = {**side["settings"], "decoder": dec.settings.decoder}
        return side

    def write(self, result: PromptResult, folder: Path, *, plot: bool = False) -> dict[str, str]:
        """All files of one prompt's comparison, atomically."""
        folder = Path(folder)
        files: dict[str, str] = {}
        with_store = self.store is not None
        with atomic_outputs() as staging:
            if result.images:
                grid = make_grid(result.images, result.labels)
                staging.write_with(folder / "grid.png", lambda p: png_with_text(
                    grid, p, {"ovi:priors": json.dumps(result.labels), "ovi:prompt": result.prompt}))
                files["grid"] = str(folder / "grid.png")
                for k, (ch, im) in enumerate(zip(self.choices, result.images)):
                    path = folder / f"{ch.slug}.png"
                    recipe = self.image_recipe(result, k)
                    staging.write_with(path, lambda p, im=im, r=recipe: write_png(p, im, r))
                    files[f"image:{ch.label}"] = str(path)
                if self.preference is not None:
                    self._score_images(result, [(ch.label, staging.staged(folder / f"{ch.slug}.png"))
                                                for ch in self.choices])
            staging.write_with(folder / "embeddings.safetensors", lambda p: self._save_embeddings(result, p))
            files["embeddings"] = str(folder / "embeddings.safetensors")
            staging.write_text(folder / "table.csv", table_csv(result.rows, result.labels, with_store,
                                                               preference=self.preference_names))
            files["table_csv"] = str(folder / "table.csv")
            if plot:
                self._stage_plot(staging, result, folder, files)
            files["table_json"] = str(folder / "table.json")
            result.files = files
            staging.write_json(folder / "table.json", self.table_json(result))
        return files

    def _score_images(self, result: PromptResult, images: list[tuple[str, Path]]) -> None:
        """Each prior's PNG (as written) scored against the prompt; the scores join the result's rows."""
        assert self.preference is not None
        result.preference = self.preference.score(result.prompt, images)
        for row in result.rows:
            row["preference"] = {name: s.score for name, s in result.preference[row["prior"]].items()}

    def _stage_plot(self, staging: Staging, result: PromptResult, folder: Path, files: dict[str, str]) -> None:
        if not result.histories:
            self.reporter.warn("--plot: none of these priors records per-step history (only OVI does); no plot")
            return
        stage_history_plot(staging, folder / "plot.png", folder / "history.csv", result.histories,
                           title=result.prompt)
        files["plot"] = str(folder / "plot.png")
        files["history"] = str(folder / "history.csv")

    def _save_embeddings(self, result: PromptResult, handle: IO[bytes]) -> None:
        from safetensors.torch import save

        tensors = {lab: result.embeds[i : i + 1].contiguous() for i, lab in enumerate(result.labels)}
        tensors["text_embeds"] = result.text.text_embeds[:1].detach().float().cpu().contiguous()
        tensors["negative_image_embeds"] = result.negative.detach().float().cpu().contiguous()
        handle.write(save(tensors, metadata={"prompt": result.prompt, "priors": json.dumps(result.labels)}))

    def table_json(self, result: PromptResult) -> dict[str, Any]:
        s = self.settings
        assert self.encoders is not None
        return {
            "prompt": result.prompt,
            "seed": result.seed,
            "priors": result.labels,
            "rows": result.rows,
            "records": result.records,
            "settings": {
                "tokens": s.tokens, "steps": s.steps, "lr": s.lr, "weight_decay": s.weight_decay,
                "options": {c.label: self.pipes[c.label].options_used() for c in self.choices},
                "negative": s.negative, "decoder": s.decoder, "height": s.height, "width": s.width,
                "decoder_steps": s.decoder_steps, "guidance_scale": s.guidance_scale,
            },
            "models": {
                "encoder": self.encoders.describe(),
                "decoder": self.decoder_pipe.decoder.describe() if self.decoder_pipe else None,
                "priors": {c.label: self.pipes[c.label].prior_options.get("model") for c in self.choices},
                "stats": getattr(self.store, "describe", lambda: None)(),
            },
            "device": str(self.decoder_pipe.device) if self.decoder_pipe else None,
            "versions": package_versions(),
            "files": result.files,
            **({"preference": {
                "scorers": self.preference.describe(),
                "details": {lab: {n: s.details for n, s in by.items()} for lab, by in result.preference.items()},
            }} if self.preference is not None else {}),
        }

    def run(
        self,
        prompts: Sequence[str],
        out_dir: Path | str,
        *,
        seeds: Sequence[int] | None = None,
        plot: bool = False,
        per_prompt_folders: bool | None = None,
        on_result=None,
    ) -> CompareRun:
        """Compare every prompt; one folder per prompt (or `out_dir` itself for a single prompt),
        then `summary.csv` / `summary.json` with the means per prior."""
        prompts = validate_prompts(prompts)
        seeds = list(seeds) if seeds is not None else [self.settings.seed + i for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise OviError("need one seed per prompt")
        out_dir = Path(out_dir)
        if per_prompt_folders is None:
            per_prompt_folders = len(prompts) > 1
        start = time.perf_counter()
        results = []
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            folder = out_dir / f"{i:04d}-{slugify(prompt)}" if per_prompt_folders else out_dir
            result = self.compare(prompt, seed)
            self.write(result, folder, plot=plot)
            results.append(result)
            if on_result is not None:
                on_result(result)
        summary = summary_rows([r.rows for r in results], self.labels)
        files = {"summary_csv": str(out_dir / "summary.csv"), "summary_json": str(out_dir / "summary.json")}
        with atomic_outputs() as staging:
            staging.write_text(out_dir / "summary.csv", table_csv(
                [{**r, "prompts": r["prompts"]} for r in summary], self.labels, self.store is not None,
                extra=("prompts",), preference=self.preference_names))
            staging.write_json(out_dir / "summary.json", {
                "prompts": [r.prompt for r in results], "seeds": seeds, "priors": self.labels,
                "means": summary, "per_prompt": [{"prompt": r.prompt, "files": r.files} for r in results],
                "seconds": time.perf_counter() - start,
            })
        return CompareRun(results, summary, files)
