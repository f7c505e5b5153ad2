"""`ovi compare --preference`: each prior's image scored against the prompt by per-image scorers.

    from ovi_cli.compare import Comparison, parse_priors
    from ovi_cli.compare_preference import preference_request
    settings, request = preference_request("pickscore,hps", settings)
    cmp = Comparison(parse_priors("textemb,ovi,ovi+nn"), settings, preference=request)

The scorers are the benchmark's scorer plugins (`ovi_cli.api.Scorer`), built exactly as
`ovi bench score` builds them (`ovi_cli.bench.score.build_scorers`: the same `ScorerContext`, the same
`--option SCORER.KEY=VALUE`s); only those that declare `prompt_only` (they read nothing but the image
and its prompt: `pickscore`, `hps`, `imagereward`, `clip-score`) can score a comparison, which has no
benchmark category. A scorer scores the PNG exactly as it is written (the same bytes), so its number
is the one `ovi bench score` gives that file and prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ovi_cli.api import ImageScore, ScoreItem, Scorer
from ovi_cli.bench.score import (
    ScoreRequest,
    build_scorers,
    check_scorer_names,
    checked_scores,
    described,
    guarded,
    registry_scorers,
)
from ovi_cli.errors import OviError
from ovi_cli.reporter import Reporter
from ovi_cli.settings import GenSettings

FLAG = "--preference"
# the comparison table's own columns: a scorer named like one would hide it
TABLE_COLUMNS = ("prior", "prompts", "text_cosine", "cosine", "mahalanobis", "nn_cosine", "nn_file", "norm",
                 "seconds", "preference")


def parse_scorer_list(text: str) -> list[str]:
    """`--preference pickscore,hps` -> `["pickscore", "hps"]` (order kept, repeats dropped)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise OviError(f"{FLAG} is empty: name at least one scorer, e.g. {FLAG} pickscore,hps")
    return list(dict.fromkeys(names))


def preference_request(text: str | None, settings: GenSettings, *, encoder_model: str | None = None,
                       registry: Any = None) -> tuple[GenSettings, ScoreRequest | None]:
    """(settings without the scorers' options, the scorers' request) for `--preference NAMES`.

    `--option SCORER.KEY=VALUE` arrives among the run's plugin options; those owned by a scorer (and by
    no prior, constraint, decoder or encoder family) move to the request, as `ovi bench score` reads
    them. `encoder_model`: the `--model` preset's CLIP, for the CLIP-based scorers (as in bench score).
    None when `text` is None (no scoring).
    """
    from ovi_cli.pipeline import OPTION_KINDS
    from ovi_cli.plugins import get_registry

    registry = registry or get_registry()
    scorers = set(registry.names("scorer"))
    others = {n for kind in OPTION_KINDS for n in registry.names(kind)}
    owned = {o: dict(v) for o, v in settings.options.items() if o in scorers and o not in others}
    rest = {o: dict(v) for o, v in settings.options.items() if o not in owned}
    settings = replace(settings, options=rest)
    names = parse_scorer_list(text) if text is not None else []
    unused = sorted(set(owned) - set(names))
    if unused:  # an option of a scorer that will not run is a mistake, not a no-op
        raise OviError(f"--option {unused[0]}.{next(iter(owned[unused[0]]))}: {unused[0]} is a scorer that this "
                       f"compare does not run; add it to --preference (e.g. --preference {unused[0]})")
    if text is None:
        return settings, None
    return settings, ScoreRequest(scorers=names, device=settings.device, options=owned,
                                  encoder_model=encoder_model)


class PreferenceScorers:
    """The scorers of `--preference`, checked and built before anything loads; scores one prompt's images."""

    def __init__(self, request: ScoreRequest, device: Any, *, reporter: Reporter | None = None,
                 registry: Any = None) -> None:
        from ovi_cli.plugins import get_registry

        self.reporter = reporter or Reporter()
        classes = registry_scorers(registry or get_registry())
        self.names = list(request.scorers or [])
        if not self.names:
            raise OviError(f"{FLAG} names no scorer")
        check_scorer_names(self.names, classes)
        usable = sorted(n for n, cls in classes.items() if _prompt_only(cls))
        for name in self.names:
            if not _prompt_only(classes[name]):
                why = f"it combines other scorers ({', '.join(classes[name].requires)})" if classes[name].requires \
                    else "it needs a benchmark category or its annotations, which a comparison has not"
                raise OviError(f"{FLAG} {name}: scorer {name!r} cannot score an image against its prompt alone "
                               f"({why}); use one of {', '.join(usable) or 'none installed'}, or score a "
                               "benchmark run with `ovi bench score`")
            if name in TABLE_COLUMNS or name.startswith("cos_"):
                raise OviError(f"{FLAG} {name}: a scorer named like a column of the comparison table cannot be "
                               "shown; rename the plugin")
        failed: dict[str, str] = {}
        self.scorers: dict[str, Scorer] = build_scorers(self.names, classes, request, device, self.reporter, failed)
        _raise_first(failed)
        self.settings: dict[str, dict[str, Any]] = {}
        self._loaded = False

    def required_models(self) -> list[Any]:
        """Every model the scorers load (`ModelRef`s), before any loads."""
        failed: dict[str, str] = {}
        refs = [ref for name, s in self.scorers.items()
                for ref in (guarded(name, "failed in required_models()", s.required_models, failed)[1] or [])]
        _raise_first(failed)
        return refs

    def check(self) -> None:
        """The scorers' models are here (one line with the download advice when not) and their settings
        known, before any model loads."""
        from ovi_cli.hub import check_models

        check_models(self.required_models(), toy_hint=False)
        failed: dict[str, str] = {}
        for name, s in self.scorers.items():
            ok, value = guarded(name, "failed in settings()", s.settings, failed)
            self.settings[name] = dict(value) if ok and isinstance(value, Mapping) else {}
        _raise_first(failed)

    def load(self) -> None:
        if self._loaded:
            return
        if not self.settings:
            self.check()
        failed: dict[str, str] = {}
        for name, s in self.scorers.items():
            self.reporter.stage(f"loading {name}")
            guarded(name, "failed to load", s.load, failed)
            _raise_first(failed)
        self._loaded = True

    def score(self, prompt: str, images: Sequence[tuple[str, Path]]) -> dict[str, dict[str, ImageScore]]:
        """label -> scorer -> `ImageScore` of each `(label, png path)` against `prompt`, in the scorers'
        batches."""
        self.load()
        items = [ScoreItem(path=Path(path), name=Path(path).name, prompt=prompt, index=k, category="")
                 for k, (_, path) in enumerate(images)]
        out: dict[str, dict[str, ImageScore]] = {label: {} for label, _ in images}
        for name, s in self.scorers.items():
            self.reporter.stage(f"scoring {name}")
            batch = max(1, s.context.batch_size)
            results: list[ImageScore] = []
            failed: dict[str, str] = {}
            for start in range(0, len(items), batch):
                chunk = items[start:start + batch]
                ok, got = guarded(name, "failed", lambda c=chunk, s=s: checked_scores(c, s.score(c, {})), failed)
                _raise_first(failed)
                results += got
            for (label, _), res in zip(images, results):
                out[label][name] = res
        return out

    def describe(self) -> dict[str, Any]:
        """What table.json records about the scorers: each one's settings (what its numbers depend on),
        options and model."""
        return {name: {"description": type(s).description, "settings": self.settings.get(name, {}),
                       "options": dict(s.options), **described(s)} for name, s in self.scorers.items()}


def _prompt_only(cls: type) -> bool:
    return bool(getattr(cls, "prompt_only", False)) and not getattr(cls, "requires", ())


def _raise_first(failed: Mapping[str, str]) -> None:
    if failed:
        raise OviError(next(iter(failed.values())))
