"""Scoring a benchmark run: which scorer scores which category, resuming, the result files.

A run folder (see `ovi_cli.bench.layout`) holds `<category>/samples/*.png`. For each category,
`score_run` runs the chosen scorers (plugins: `ovi_cli.api.Scorer`) on the images that have no
score yet, and writes:

    RUN/<category>/scores/<scorer>.jsonl   ovi's per-image cache: a header line with the scorer's
                                           settings, then {"image", "score", "details", "stamp"} lines
    RUN/<category>/<official result files> e.g. annotation_blip/vqa_result.json (the official shapes)
    RUN/scores.json                        every scorer's mean per category, images counted, settings

Resume: an image whose name and file stamp (size, mtime) are in the cache is not scored again; a
torn last line (an interrupt) is dropped. A cache written with other settings (another model,
option or noun-phrase parser) is refused with one line, unless `rescore=True` discards it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovi_cli.api import ImageScore, ScoreItem, Scorer, ScorerContext, resolve_options
from ovi_cli.bench.layout import (
    SAMPLES,
    bench_json_path,
    category_dir,
    parse_sample_name,
    samples_dir,
    scores_json_path,
)
from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_outputs, atomic_write_json
from ovi_cli.reporter import WarnReporter

SCORES_DIR = "scores"  # RUN/<category>/scores/<scorer>.jsonl
SCORES_FORMAT = "ovi-bench-scores/1"
CACHE_FORMAT = "ovi-bench-score-cache/1"
# the categories in the order of the T2I-CompBench++ paper's table; others follow alphabetically
NLP_CHOICES = ("auto", "spacy", "rules")  # how scorers find noun phrases (ScorerContext.nlp)
PAPER_ORDER = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "non_spatial", "complex")


# ---- reading a run -------------------------------------------------------------------------------
def read_bench_json(run: Path) -> dict[str, Any]:
    """`RUN/bench.json`, or `{}` when it is missing or unreadable (a run is scored all the same)."""
    path = bench_json_path(run)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_name(bench: Mapping[str, Any], fallback: str) -> str:
    """A run's name from its prior and constraints: `ovi`, `ovi+nn:0.5`, `textemb`; else `fallback`."""
    settings = bench.get("settings") if isinstance(bench.get("settings"), dict) else {}
    prior = settings.get("prior") or bench.get("prior")
    if not isinstance(prior, str) or not prior:
        return fallback
    constraints = settings.get("constraints") or bench.get("constraints") or []
    if isinstance(constraints, str):
        constraints = [constraints]
    parts = [str(c) for c in constraints if isinstance(c, (str, int, float)) and str(c)]
    return "+".join([prior, *parts])


def order_categories(categories: Iterable[str]) -> list[str]:
    """The paper's categories in the paper's order first, then the others in the order given; no duplicates."""
    unique = list(dict.fromkeys(categories))
    known = [c for c in PAPER_ORDER if c in unique]
    return known + [c for c in unique if c not in PAPER_ORDER]


def run_categories(run: Path, bench: Mapping[str, Any] | None = None) -> list[str]:
    """Categories of a run that have a `samples/` folder (bench.json's first, in its order; then by name).

    bench.json's "categories" may be a list of names or an object keyed by name.
    """
    run = Path(run)
    listed = [c for c in (bench or {}).get("categories", []) or [] if isinstance(c, str)]
    found = sorted(p.parent.name for p in run.glob(f"*/{SAMPLES}") if p.is_dir())
    present = [c for c in listed if c in found] + [c for c in found if c not in listed]
    return order_categories(present)


def list_items(run: Path, category: str) -> list[ScoreItem]:
    """The category's images in the official order (by the six-digit counter)."""
    items = []
    folder = samples_dir(run, category)
    for path in folder.glob("*.png"):
        if path.name.startswith("."):
            continue  # a temporary file of an interrupted write
        try:
            prompt, index = parse_sample_name(path.name)
        except ValueError:
            continue  # not a benchmark sample name
        items.append(ScoreItem(path=path, name=path.name, prompt=prompt, index=index, category=category))
    return sorted(items, key=lambda it: (it.index, it.name))


@dataclass
class RunInfo:
    path: Path
    name: str
    bench: dict[str, Any]
    categories: list[str]


def open_run(run: Path) -> RunInfo:
    """A run folder's name, bench.json and categories, or a one-line error."""
    run = Path(run)
    if not run.exists():
        raise OviError(f"run folder {str(run)!r} does not exist")
    if not run.is_dir():
        raise OviError(f"run {str(run)!r} is a file, not a run folder")
    bench = read_bench_json(run)
    categories = run_categories(run, bench)
    if not categories:
        raise OviError(f"{str(run)!r} holds no <category>/samples/ folder: not a benchmark run "
                       "(make one with `ovi bench generate`)")
    return RunInfo(run, run_name(bench, run.resolve().name), bench, categories)


# ---- which scorer scores which category -------------------------------------------------------
@dataclass
class Plan:
    jobs: list[tuple[str, str]] = field(default_factory=list)  # (category, scorer) in running order
    primary: dict[str, str] = field(default_factory=dict)  # category -> the paper's scorer for it
    skipped: dict[str, str] = field(default_factory=dict)  # category -> why it is not scored


def default_scorers(category: str, bench: Mapping[str, Any], scorer_classes: Mapping[str, type]) -> list[str]:
    """bench.json's `scorers` for the category if it names some, else the scorers that claim it."""
    named = bench.get("scorers")
    if isinstance(named, dict) and isinstance(named.get(category), list):
        return [s for s in named[category] if isinstance(s, str)]
    benchmark = bench.get("benchmark")
    return [name for name, cls in sorted(scorer_classes.items())
            if category in getattr(cls, "categories", ())
            or (benchmark and benchmark in getattr(cls, "benchmarks", ()))]


def plan_scoring(
    categories: Sequence[str],
    bench: Mapping[str, Any],
    scorer_classes: Mapping[str, type],
    scorers: Sequence[str] | None = None,
) -> Plan:
    """Jobs for `scorers` (all of them on every category) or the defaults per category.

    A scorer's `requires` run before it on the same category; a category a scorer `refuses` is
    skipped with the scorer's reason.
    """
    for name in scorers or []:
        if name not in scorer_classes:
            known = ", ".join(sorted(scorer_classes)) or "none"
            raise OviError(f"unknown scorer {name!r}; available: {known} (see `ovi plugins`)")
    plan = Plan()
    for category in categories:
        defaults = default_scorers(category, bench, scorer_classes)
        chosen = list(scorers) if scorers else defaults
        if defaults and defaults[0] in scorer_classes:
            plan.primary[category] = defaults[0]
        if not chosen:
            refusals = [f"{n}: {r}" for n, cls in sorted(scorer_classes.items())
                        if (r := dict(getattr(cls, "refuses", {}) or {}).get(category))]
            plan.skipped[category] = "; ".join(refusals) or "no scorer scores it by default (name some with --scorers)"
            continue
        reasons = []
        for name in chosen:
            if name not in scorer_classes:
                raise OviError(f"bench.json names scorer {name!r} for {category!r}, which is not installed; "
                               f"available: {', '.join(sorted(scorer_classes))}")
            refused = _refusal(name, category, scorer_classes)
            if refused:
                reasons.append(f"{name}: {refused}")
                continue
            for job in _with_requirements(name, category, scorer_classes, ()):
                if job not in plan.jobs:
                    plan.jobs.append(job)
        if reasons and not any(c == category for c, _ in plan.jobs):
            plan.skipped[category] = "; ".join(reasons)
    return plan


def _refusal(name: str, category: str, scorer_classes: Mapping[str, type]) -> str | None:
    cls = scorer_classes[name]
    reason = dict(getattr(cls, "refuses", {}) or {}).get(category)
    if reason:
        return reason
    for req in getattr(cls, "requires", ()):
        if req not in scorer_classes:
            return f"needs scorer {req!r}, which is not installed"
        sub = _refusal(req, category, scorer_classes)
        if sub:
            return sub
    return None


def _with_requirements(name: str, category: str, scorer_classes: Mapping[str, type],
                       seen: tuple[str, ...]) -> list[tuple[str, str]]:
    if name in seen:
        raise OviError(f"scorer {name!r} requires itself (through {' -> '.join(seen)})")
    out: list[tuple[str, str]] = []
    for req in getattr(scorer_classes[name], "requires", ()):
        out += _with_requirements(req, category, scorer_classes, (*seen, name))
    return [*out, (category, name)]


# ---- the per-image cache -------------------------------------------------------------------------
def cache_path(run: Path, category: str, scorer: str) -> Path:
    return category_dir(run, category) / SCORES_DIR / f"{scorer}.jsonl"


def stamp(path: Path) -> list[int]:
    """What says an image file changed: its size and modification time."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


@dataclass
class Cached:
    score: ImageScore
    stamp: list[int]


def read_cache(path: Path) -> tuple[dict[str, Any] | None, dict[str, Cached]]:
    """(header, image name -> cached score) of a cache file; a torn or bad line is dropped."""
    if not path.is_file():
        return None, {}
    header: dict[str, Any] | None = None
    rows: dict[str, Cached] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if n == 0:
                header = obj if obj.get("format") == CACHE_FORMAT else None
                continue
            try:
                rows[str(obj["image"])] = Cached(ImageScore(float(obj["score"]), dict(obj.get("details") or {})),
                                                 list(obj.get("stamp") or []))
            except (KeyError, TypeError, ValueError):
                continue
    return header, rows


def _cache_line(item: ScoreItem, result: ImageScore, item_stamp: list[int]) -> str:
    return json.dumps({"image": item.name, "score": result.score, "details": result.details, "stamp": item_stamp},
                      ensure_ascii=False) + "\n"


def settings_key(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if settings_key({k: old.get(k)}) !=
             settings_key({k: new.get(k)})]
    return "; ".join(diffs)[:300] or "settings differ"


def write_cache(path: Path, header: Mapping[str, Any], rows: Mapping[str, Cached]) -> None:
    """Rewrite a cache file whole (atomically): the header, then one line per image."""
    lines = [json.dumps(dict(header), ensure_ascii=False) + "\n"]
    for name, c in rows.items():
        lines.append(json.dumps({"image": name, "score": c.score.score, "details": c.score.details,
                                 "stamp": c.stamp}, ensure_ascii=False) + "\n")
    with atomic_outputs() as out:
        out.write_text(path, "".join(lines))


# ---- model fingerprints (for scorers' settings) --------------------------------------------------
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")


def folder_fingerprint(folder: Path) -> str:
    """A short id of a model folder: its small JSON/text files' contents and its weight files' sizes.

    Cheap (weights are not read) and independent of where the folder lies, so a moved or
    re-downloaded copy of the same model gives the same id and another model a different one.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or ".cache" in p.parts:
            continue
        rel = p.relative_to(folder).as_posix()
        if p.suffix in WEIGHT_SUFFIXES:
            h.update(f"{rel}:{p.stat().st_size}\n".encode())
        elif p.suffix in (".json", ".txt", ".model") and p.stat().st_size < 4_000_000:
            h.update(f"{rel}\n".encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


# ---- progress ------------------------------------------------------------------------------------
class ScoreProgress:
    """How `score_run` reports; the CLI renders it with Rich. Default: silent."""

    def warn(self, message: str) -> None:
        """One warning line."""

    def stage(self, message: str) -> None:
        """What is happening now (loading a model, ...)."""

    def start(self, label: str, total: int) -> None:
        """A scorer starts on `total` images of one category."""

    def advance(self, done: int) -> None:
        """`done` more images scored."""


# ---- scoring -------------------------------------------------------------------------------------
@dataclass
class ScoreRequest:
    """What `ovi bench score` was asked."""

    scorers: list[str] | None = None  # None: the defaults per category
    categories: list[str] | None = None  # None: every category of the run
    device: str = "auto"
    batch_size: int = 16
    nlp: str = "auto"
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer -> {key: value}
    encoder_model: str | None = None  # from a --model preset
    rescore: bool = False  # discard caches written with other settings


def _registry_scorers(registry: Any) -> dict[str, type]:
    return {name: registry.get("scorer", name) for name in registry.names("scorer")}


def _origin(registry: Any, name: str) -> dict[str, str]:
    entry = registry.entries["scorer"].get(name)
    return {"package": entry.package, "version": entry.version} if entry else {}


def build_scorers(names: Iterable[str], classes: Mapping[str, type], request: ScoreRequest,
                  device: Any, warn: Any) -> dict[str, Scorer]:
    unknown_owners = set(request.options) - set(classes)
    if unknown_owners:
        owner = sorted(unknown_owners)[0]
        key = next(iter(request.options[owner]), "KEY")
        raise OviError(f"--option {owner}.{key}: no scorer named {owner!r} (scorers: {', '.join(sorted(classes))})")
    out: dict[str, Scorer] = {}
    for name in names:
        cls = classes[name]
        opts = resolve_options(cls, name, request.options.get(name))
        ctx = ScorerContext(name=name, device=device, options=opts, reporter=WarnReporter(warn),
                            batch_size=request.batch_size, nlp=request.nlp, encoder_model=request.encoder_model)
        out[name] = cls(ctx)
    return out


def score_run(run: Path, request: ScoreRequest | None = None, *, progress: ScoreProgress | None = None,
              registry: Any = None) -> dict[str, Any]:
    """Score what is in `run`; write the official files and `scores.json`; return scores.json's content.

    Checks everything (run, scorers, options, earlier caches, models) before loading a model.
    """
    from ovi_cli.devices import resolve_device
    from ovi_cli.hub import check_models
    from ovi_cli.plugins import get_registry

    request = request or ScoreRequest()
    progress = progress or ScoreProgress()
    registry = registry or get_registry()
    if request.batch_size < 1:
        raise OviError("--batch-size must be >= 1")
    if request.nlp not in NLP_CHOICES:
        raise OviError(f"--nlp must be one of {', '.join(NLP_CHOICES)} (got {request.nlp!r})")
    info = open_run(run)
    categories = _chosen_categories(run, info.categories, request.categories)
    classes = _registry_scorers(registry)
    plan = plan_scoring(categories, info.bench, classes, request.scorers)
    for category, reason in plan.skipped.items():
        progress.warn(f"{category}: not scored: {reason}")
    device = resolve_device(request.device)
    scorers = build_scorers(dict.fromkeys(n for _, n in plan.jobs), classes, request, device, progress.warn)

    # every check before any model loads: earlier scores' settings, then the models still needed
    settings, unavailable = _settings_of(scorers)
    items = {c: list_items(info.path, c) for c in categories}
    stamps = {str(it.path): stamp(it.path) for c in categories for it in items[c]}
    caches, pending = _read_caches(info.path, plan.jobs, settings, unavailable, items, stamps, request.rescore)
    needed = sorted({name for key, todo in pending.items() if todo for name in [key[1]]})
    check_models([ref for name in needed for ref in scorers[name].required_models()], toy_hint=False)

    loaded: set[str] = set()
    for category, name in plan.jobs:
        todo = pending[(category, name)]
        rows = caches[(category, name)]
        path = cache_path(info.path, category, name)
        write_cache(path, _header(name, settings[name]), rows)  # compacted: torn or discarded lines go
        if todo:
            scorer = scorers[name]
            if name not in loaded:
                progress.stage(f"loading {name}")
                scorer.load()
                loaded.add(name)
            _score_pending(path, category, name, scorer, todo, rows, caches, stamps, progress)
            write_cache(path, _header(name, settings[name]), rows)
        scored = [(it, rows[it.name].score) for it in items[category] if it.name in rows]
        _write_official(info.path, category, scorers[name].official_files(category, scored))
    return write_scores_json(info, plan, scorers, settings, registry)


def _chosen_categories(run: Path, categories: list[str], wanted: list[str] | None) -> list[str]:
    """The run's categories, narrowed to `--categories` (each of which must be in the run)."""
    if not wanted:
        return categories
    missing = [c for c in wanted if c not in categories]
    if missing:
        raise OviError(f"--categories: {', '.join(missing)} not in {str(run)!r} "
                       f"(it has {', '.join(categories)})")
    return [c for c in categories if c in wanted]


def _read_caches(run: Path, jobs: list[tuple[str, str]], settings: dict[str, dict[str, Any]], unavailable: set[str],
                 items: dict[str, list[ScoreItem]], stamps: dict[str, Any], rescore: bool,
                 ) -> tuple[dict[tuple[str, str], dict[str, Cached]], dict[tuple[str, str], list[ScoreItem]]]:
    """Earlier scores of each (category, scorer) job, and the images each still has to score.

    Scores made with other settings are refused unless `rescore` (then discarded); a scorer whose
    model is missing here keeps what is cached and scores nothing new.
    """
    caches: dict[tuple[str, str], dict[str, Cached]] = {}
    pending: dict[tuple[str, str], list[ScoreItem]] = {}
    for category, name in jobs:
        path = cache_path(run, category, name)
        header, rows = read_cache(path)
        if name in unavailable:
            settings[name] = (header or {}).get("settings", {})
        elif header is not None and settings_key(header.get("settings", {})) != settings_key(settings[name]):
            if not rescore:
                raise OviError(f"{category}: earlier {name} scores in {str(path)!r} were made with other settings "
                               f"({_describe_difference(header.get('settings', {}), settings[name])}); "
                               "pass --rescore to discard them and score again")
            rows = {}
        caches[(category, name)] = rows
        pending[(category, name)] = [it for it in items[category]
                                     if it.name not in rows or rows[it.name].stamp != stamps[str(it.path)]]
    return caches, pending


def _settings_of(scorers: Mapping[str, Scorer]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Each scorer's settings (a combining scorer's include those it requires), and the scorers whose
    model is not available here (their settings cannot be known)."""
    from ovi_cli.hub import ModelUnavailable

    own: dict[str, dict[str, Any]] = {}
    unavailable: set[str] = set()
    for name, s in scorers.items():
        try:
            own[name] = s.settings()
        except ModelUnavailable:
            unavailable.add(name)
            own[name] = {}
    out = {}
    for name, s in scorers.items():
        reqs = type(s).requires
        if reqs:
            if any(r in unavailable for r in reqs):
                unavailable.add(name)
            out[name] = {**own[name], "requires": {r: own.get(r, {}) for r in reqs}}
        else:
            out[name] = own[name]
    return out, unavailable


def _header(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": CACHE_FORMAT, "scorer": name, "settings": dict(settings)}


def _score_pending(path: Path, category: str, name: str, scorer: Scorer, todo: list[ScoreItem],
                   rows: dict[str, Cached], caches: Mapping[tuple[str, str], dict[str, Cached]],
                   stamps: Mapping[str, list[int]], progress: ScoreProgress) -> None:
    """Score `todo` in batches, appending each batch's lines to the cache as it finishes."""
    progress.start(f"{category}: {name}", len(todo))
    batch = max(1, scorer.context.batch_size)
    with path.open("a", encoding="utf-8") as f:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            inputs = {req: [caches[(category, req)][it.name].score for it in chunk] for req in type(scorer).requires}
            results = scorer.score(chunk, inputs)
            if len(results) != len(chunk):
                raise OviError(f"scorer {name!r} returned {len(results)} scores for {len(chunk)} images")
            for it, res in zip(chunk, results):
                st = stamps[str(it.path)]
                rows[it.name] = Cached(res, st)
                f.write(_cache_line(it, res, st))
            f.flush()
            progress.advance(len(chunk))


def _write_official(run: Path, category: str, files: Mapping[str, Any]) -> None:
    if not files:
        return
    base = category_dir(run, category)
    with atomic_outputs() as out:
        for rel, content in files.items():
            target = base / rel
            if isinstance(content, str):
                out.write_text(target, content)
            else:
                out.write_text(target, json.dumps(content) + "\n")


# ---- scores.json ---------------------------------------------------------------------------------
def collect_scores(run: Path, categories: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """category -> scorer -> {mean, images, prompts, unscored, settings} from the caches on disk."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for category in categories:
        folder = category_dir(run, category) / SCORES_DIR
        if not folder.is_dir():
            continue
        items = list_items(run, category)
        for path in sorted(folder.glob("*.jsonl")):
            header, rows = read_cache(path)
            if header is None:
                continue
            name = str(header.get("scorer") or path.stem)
            values, prompts = [], set()
            for it in items:
                c = rows.get(it.name)
                if c is not None and c.stamp == stamp(it.path):
                    values.append(c.score.score)
                    prompts.add(it.prompt)
            if not values:
                continue
            out.setdefault(category, {})[name] = {
                "mean": sum(values) / len(values), "images": len(values), "prompts": len(prompts),
                "unscored": len(items) - len(values), "settings": header.get("settings", {}),
            }
    return out


def write_scores_json(info: RunInfo, plan: Plan, scorers: Mapping[str, Scorer],
                      settings: Mapping[str, Mapping[str, Any]], registry: Any) -> dict[str, Any]:
    """Rewrite `RUN/scores.json` from every cache in the run (earlier invocations' too)."""
    from ovi_cli import __version__

    path = scores_json_path(info.path)
    previous: dict[str, Any] = {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    categories = collect_scores(info.path, info.categories)
    primary = dict(previous.get("primary") or {}) if isinstance(previous.get("primary"), dict) else {}
    primary.update(plan.primary)
    scorer_info = dict(previous.get("scorers") or {}) if isinstance(previous.get("scorers"), dict) else {}
    for name, s in scorers.items():
        scorer_info[name] = {**_origin(registry, name), "description": type(s).description,
                             "requires": list(type(s).requires), "settings": dict(settings.get(name, {})),
                             **s.describe()}
    skipped = {c: r for c, r in plan.skipped.items() if c not in categories}
    doc = {
        "format": SCORES_FORMAT,
        "name": info.name,
        "benchmark": info.bench.get("benchmark"),
        "categories": {c: categories[c] for c in order_categories(categories)},
        "primary": {c: s for c, s in primary.items() if c in categories and s in categories[c]},
        "skipped": skipped,
        "scorers": {n: v for n, v in scorer_info.items() if any(n in cs for cs in categories.values())},
        "ovi_version": __version__,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(path, doc)
    return doc
