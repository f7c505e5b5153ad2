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
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ovi_cli.api import ImageScore, ScoreItem, Scorer, ScorerContext, resolve_options
from ovi_cli.bench.layout import (
    SAMPLES,
    category_dir,
    parse_sample_name,
    samples_dir,
    scores_json_path,
)
from ovi_cli.bench.runlog import read_bench_json
from ovi_cli.errors import OviError, first_line
from ovi_cli.outputs import atomic_outputs, atomic_write_json, write_errors
from ovi_cli.reporter import Reporter
from ovi_cli.resume import check_resume

SCORES_DIR = "scores"  # RUN/<category>/scores/<scorer>.jsonl
SCORES_FORMAT = "ovi-bench-scores/1"
CACHE_FORMAT = "ovi-bench-score-cache/1"
# the categories in the order of the T2I-CompBench++ paper's table; others follow alphabetically
NLP_CHOICES = ("auto", "spacy", "rules")  # how scorers find noun phrases (ScorerContext.nlp)
PAPER_ORDER = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "non_spatial", "complex")


# ---- reading a run -------------------------------------------------------------------------------
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
    """The category's images in the official order (by the six-digit counter).

    A sample that is not a regular file (a folder, a dangling link) is a one-line `OviError` naming it.
    """
    items = []
    folder = samples_dir(run, category)
    for path in folder.glob("*.png"):
        if path.name.startswith("."):
            continue  # a temporary file of an interrupted write
        try:
            prompt, index = parse_sample_name(path.name)
        except ValueError:
            continue  # not a benchmark sample name
        if not path.is_file():
            what = "a dangling link" if path.is_symlink() and not path.exists() else "not a regular file"
            raise OviError(f"sample {str(path)!r} is {what}; remove it or make it again with `ovi bench generate`")
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
    bench = read_bench_json(run) or {}  # the one reader (`runlog`); no bench.json: scored all the same
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
    check_scorer_names(scorers or [], scorer_classes)
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


def check_scorer_names(names: Iterable[str], scorer_classes: Mapping[str, type]) -> None:
    """Every name a registered scorer (one line naming the first that is not, and the known ones)."""
    for name in names:
        if name not in scorer_classes:
            known = ", ".join(sorted(scorer_classes)) or "none"
            raise OviError(f"unknown scorer {name!r}; available: {known} (see `ovi plugins`)")


def _refusal(name: str, category: str, scorer_classes: Mapping[str, type],
             seen: tuple[str, ...] = ()) -> str | None:
    if name in seen:
        raise OviError(f"scorer {name!r} requires itself (through {' -> '.join((*seen, name))})")
    cls = scorer_classes[name]
    reason = dict(getattr(cls, "refuses", {}) or {}).get(category)
    if reason:
        return reason
    for req in getattr(cls, "requires", ()):
        if req not in scorer_classes:
            return f"needs scorer {req!r}, which is not installed"
        sub = _refusal(req, category, scorer_classes, (*seen, name))
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
    with path.open(encoding="utf-8", errors="replace") as f:  # junk bytes: lines that do not parse
        for n, line in enumerate(f):
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(obj, dict):
                continue
            if n == 0:
                header = obj if obj.get("format") == CACHE_FORMAT and _json_clean(obj) else None
                if header is None:
                    return None, {}  # not a cache ovi wrote (or hand-edited): every image is scored again
                continue
            try:
                score = float(obj["score"])
                details = dict(obj.get("details") or {})
                row = Cached(ImageScore(score, details), [int(v) for v in obj.get("stamp") or []])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(score) and _json_clean(details):  # a NaN or junk value is a missing score
                rows[str(obj["image"])] = row
    return header, rows


def _json_clean(value: Any) -> bool:
    """True when `value` is strict JSON: no NaN or infinity, nothing JSON cannot hold."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _cache_line(item: ScoreItem, result: ImageScore, item_stamp: list[int]) -> str:
    return json.dumps({"image": item.name, "score": result.score, "details": result.details, "stamp": item_stamp},
                      ensure_ascii=False) + "\n"


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


def registry_scorers(registry: Any) -> dict[str, type]:
    return {name: registry.get("scorer", name) for name in registry.names("scorer")}


def _origin(registry: Any, name: str) -> dict[str, str]:
    entry = registry.entries["scorer"].get(name)
    return {"package": entry.package, "version": entry.version} if entry else {}


def build_scorers(names: Iterable[str], classes: Mapping[str, type], request: ScoreRequest,
                  device: Any, reporter: Reporter, failed: dict[str, str] | None = None) -> dict[str, Scorer]:
    """Each scorer built with its context; one that fails to build is recorded in `failed` (or raised)."""
    unknown_owners = set(request.options) - set(classes)
    if unknown_owners:
        owner = sorted(unknown_owners)[0]
        key = next(iter(request.options[owner]), "KEY")
        raise OviError(f"--option {owner}.{key}: no scorer named {owner!r} (scorers: {', '.join(sorted(classes))})")
    out: dict[str, Scorer] = {}
    for name in names:
        cls = classes[name]
        opts = resolve_options(cls, name, request.options.get(name))
        ctx = ScorerContext(name=name, device=device, options=opts, reporter=reporter,
                            batch_size=request.batch_size, nlp=request.nlp, encoder_model=request.encoder_model)
        ok, scorer = guarded(name, "could not be built", partial(cls, ctx), failed if failed is not None else {})
        if ok:
            out[name] = scorer
        elif failed is None:
            raise OviError(f"scorer {name!r} could not be built")
    return out


def guarded(name: str, what: str, call: Any, failed: dict[str, str]) -> tuple[bool, Any]:
    """`call()`, with whatever a scorer plugin raises (an exception, `SystemExit(n)`) recorded in
    `failed` as one line naming the scorer; Ctrl-C still stops the run."""
    try:
        return True, call()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin's failure, SystemExit included, is one line
        _fail(failed, name, what, exc)
        return False, None


def _fail(failed: dict[str, str], name: str, what: str, exc: BaseException) -> None:
    reason = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else \
        str(exc) if isinstance(exc, OviError) else first_line(exc)
    failed.setdefault(name, f"scorer {name!r} {what}: {reason}")


class ScorerFailed(OviError):
    """Some scorers failed (each named); the others' scores were written."""


def score_run(run: Path, request: ScoreRequest | None = None, *, reporter: Reporter | None = None,
              registry: Any = None) -> dict[str, Any]:
    """Score what is in `run`; write the official files and `scores.json`; return scores.json's content.

    Checks everything (run, scorers, options, earlier caches, models) before loading a model.
    Reports through `reporter` (`ovi_cli.reporter.Reporter`: warn, stage, start, advance).
    A scorer that fails (its constructor, `settings()`, `load()`, `score()` or `official_files()`
    raises anything, `SystemExit` included, or it returns a score that is not a finite number) is
    left out with the scorers that require it; the others are scored and written, then
    `ScorerFailed` (one line naming the scorer) is raised.
    """
    from ovi_cli.devices import resolve_device
    from ovi_cli.hub import check_models
    from ovi_cli.plugins import get_registry

    request = request or ScoreRequest()
    reporter = reporter or Reporter()
    registry = registry or get_registry()
    if request.batch_size < 1:
        raise OviError("--batch-size must be >= 1")
    if request.nlp not in NLP_CHOICES:
        raise OviError(f"--nlp must be one of {', '.join(NLP_CHOICES)} (got {request.nlp!r})")
    info = open_run(run)
    categories = _chosen_categories(run, info.categories, request.categories)
    classes = registry_scorers(registry)
    plan = plan_scoring(categories, info.bench, classes, request.scorers)
    for category, reason in plan.skipped.items():
        reporter.warn(f"{category}: not scored: {reason}")
    device = resolve_device(request.device)
    failed: dict[str, str] = {}
    scorers = build_scorers(dict.fromkeys(n for _, n in plan.jobs), classes, request, device, reporter, failed)

    # every check before any model loads: earlier scores' settings, then the models still needed
    settings, unavailable = _settings_of(scorers, failed)
    jobs = [(c, n) for c, n in plan.jobs if _runnable(n, classes, failed)]
    items = {c: list_items(info.path, c) for c in categories}
    stamps = {str(it.path): stamp(it.path) for c in categories for it in items[c]}
    caches, pending = _read_caches(info.path, jobs, settings, unavailable, items, stamps, request.rescore)
    check_images({it.path for todo in pending.values() for it in todo})
    needed = sorted({name for key, todo in pending.items() if todo for name in [key[1]]})
    refs = []
    for name in needed:
        ok, models = guarded(name, "failed in required_models()", scorers[name].required_models, failed)
        refs += models if ok else []
    check_models(refs, toy_hint=False)

    loaded: set[str] = set()
    for category, name in jobs:
        if not _runnable(name, classes, failed):
            continue
        todo = pending[(category, name)]
        rows = caches[(category, name)]
        path = cache_path(info.path, category, name)
        write_cache(path, _header(name, settings[name]), rows)  # compacted: torn or discarded lines go
        scorer = scorers[name]
        if todo:
            if name not in loaded:
                reporter.stage(f"loading {name}")
                if not guarded(name, "failed to load", scorer.load, failed)[0]:
                    continue
                loaded.add(name)
            ok, _ = guarded(name, "failed", partial(_score_pending, path, category, name, scorer, todo, rows, caches,
                                                     stamps, reporter), failed)
            write_cache(path, _header(name, settings[name]), rows)  # what was scored stays
            if not ok:
                continue
        scored = [(it, rows[it.name].score) for it in items[category] if it.name in rows]
        ok, files = guarded(name, "failed in official_files()", partial(scorer.official_files, category, scored),
                             failed)
        if ok:
            _write_official(info.path, category, files)
    doc = write_scores_json(info, plan, {n: s for n, s in scorers.items() if n not in failed}, settings, registry)
    if failed:
        lines = list(failed.values())
        more = f" (and {len(lines) - 1} more scorer(s) failed)" if len(lines) > 1 else ""
        raise ScorerFailed(f"{lines[0]}{more}; the other scorers' scores are in {str(scores_json_path(info.path))!r}")
    return doc


def _runnable(name: str, classes: Mapping[str, type], failed: Mapping[str, str]) -> bool:
    """A scorer that has not failed, nor has any scorer it requires (cycles are refused when planning)."""
    return name not in failed and all(_runnable(r, classes, failed) for r in getattr(classes[name], "requires", ()))


def check_images(paths: Iterable[Path]) -> None:
    """Every image still to score opens as an image (one line naming the first that does not), before
    any scorer model loads."""
    from PIL import Image, UnidentifiedImageError

    for path in sorted(paths):
        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise OviError(f"sample {str(path)!r} is not a readable image ({first_line(exc)}); remove it or make "
                           "it again with `ovi bench generate`") from None


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
        elif header is not None:
            try:
                check_resume(header.get("settings", {}), settings[name], f"{category}: earlier {name} scores in "
                             f"{str(path)!r}", "pass --rescore to discard them and score again", ignore=(),
                             sep=": ", verb="were")
            except OviError:
                if not rescore:
                    raise
                rows = {}
        caches[(category, name)] = rows
        pending[(category, name)] = [it for it in items[category]
                                     if it.name not in rows or rows[it.name].stamp != stamps[str(it.path)]]
    return caches, pending


def _settings_of(scorers: Mapping[str, Scorer], failed: dict[str, str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Each scorer's settings (a combining scorer's include those it requires), and the scorers whose
    model is not available here (their settings cannot be known). Settings that raise, or are not
    strict JSON (NaN, objects), fail the scorer (`failed`)."""
    from ovi_cli.hub import ModelUnavailable

    own: dict[str, dict[str, Any]] = {}
    unavailable: set[str] = set()
    for name, s in scorers.items():
        try:
            ok, value = True, s.settings()
        except ModelUnavailable:
            unavailable.add(name)
            own[name] = {}
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a plugin's failure, SystemExit included, is one line
            _fail(failed, name, "failed in settings()", exc)
            ok, value = False, None
        if ok and not (isinstance(value, Mapping) and _json_clean(dict(value))):
            failed.setdefault(name, f"scorer {name!r}: settings() returned {type(value).__name__} that is not a "
                                    "JSON object of finite values; its scores cannot be recorded")
            ok = False
        own[name] = dict(value) if ok else {}
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
                   stamps: Mapping[str, list[int]], reporter: Reporter) -> None:
    """Score `todo` in batches, appending each batch's lines to the cache as it finishes; a score
    that is not a finite number (or details JSON cannot hold) is refused, never written."""
    reporter.start(f"{category}: {name}", len(todo))
    batch = max(1, scorer.context.batch_size)
    with write_errors(path, "open the score cache"):
        f = path.open("a", encoding="utf-8")
    with f:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            inputs = {req: [caches[(category, req)][it.name].score for it in chunk] for req in type(scorer).requires}
            results = checked_scores(chunk, scorer.score(chunk, inputs))
            lines = []
            for it, res in zip(chunk, results):
                st = stamps[str(it.path)]
                rows[it.name] = Cached(res, st)
                lines.append(_cache_line(it, res, st))
            with write_errors(path, "append scores to"):
                f.write("".join(lines))
                f.flush()
            reporter.advance(len(chunk))


def checked_scores(chunk: Sequence[ScoreItem], results: Any) -> list[ImageScore]:
    """A scorer's results for `chunk`, refused whole (one line) unless they are one `ImageScore` per
    item, each a finite number with JSON details."""
    if not isinstance(results, (list, tuple)) or len(results) != len(chunk):
        raise OviError(f"returned {len(results) if isinstance(results, (list, tuple)) else results!r} "
                       f"scores for {len(chunk)} images")
    for it, res in zip(chunk, results):  # the whole batch is checked before any of it is used
        if not isinstance(res, ImageScore) or isinstance(res.score, bool) or \
                not isinstance(res.score, (int, float)) or not math.isfinite(res.score) or \
                not isinstance(res.details, dict) or not _json_clean(res.details):
            raise OviError(f"returned {getattr(res, 'score', res)!r} for {str(it.path)!r}: not a finite "
                           "score with JSON details; nothing of it was written")
    return list(results)


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


def described(scorer: Scorer) -> dict[str, Any]:
    """A scorer's `describe()`, or nothing when it raises or is not strict JSON (it is not compared)."""
    try:
        out = scorer.describe()
    except Exception:  # noqa: BLE001 - facts for the record only
        return {}
    return dict(out) if isinstance(out, Mapping) and _json_clean(dict(out)) else {}


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
    from ovi_cli.version import ovi_version

    path = scores_json_path(info.path)
    previous: dict[str, Any] = {}
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        pass
    categories = collect_scores(info.path, info.categories)
    primary = dict(previous.get("primary") or {}) if isinstance(previous.get("primary"), dict) else {}
    primary.update(plan.primary)
    scorer_info = dict(previous.get("scorers") or {}) if isinstance(previous.get("scorers"), dict) else {}
    for name, s in scorers.items():
        scorer_info[name] = {**_origin(registry, name), "description": type(s).description,
                             "requires": list(type(s).requires), "settings": dict(settings.get(name, {})),
                             **described(s)}
    skipped = {c: r for c, r in plan.skipped.items() if c not in categories}
    doc = {
        "format": SCORES_FORMAT,
        "name": info.name,
        "benchmark": info.bench.get("benchmark"),
        "categories": {c: categories[c] for c in order_categories(categories)},
        "primary": {c: s for c, s in primary.items() if c in categories and s in categories[c]},
        "skipped": skipped,
        "scorers": {n: v for n, v in scorer_info.items() if any(n in cs for cs in categories.values())},
        "ovi_version": ovi_version(),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(path, doc)
    return doc
