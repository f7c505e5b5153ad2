"""`ovi bench fidelity`: how real a run's images look, against a reference of real images.

For each run, each feature space (a `FeatureSpace` plugin: clip, dinov2, inception, ...) and each
set metric (a `SetMetric` plugin: fd, kid, prdc, ...), the metric's values over all the run's
images and per category go to `RUN/fidelity.json`; `ovi bench table` reads them beside the
compositional scores (`ovi_cli.bench.table`).

The reference is a folder of images, or an ovi statistics store (`ovi_stats.store`): a store's
stored float64 moments give the Frechet distance and its stored embeddings the vector metrics, so
no reference image is encoded again (the store's vision tower must be the run's: checked).

Features are cached by the image file's content hash and the feature space's settings
(`FeatureCache`): each image is encoded once per feature space, whatever run or reference it
appears in, and an interrupted run keeps every finished chunk. Every input is checked (runs,
categories, image headers, sizes, the reference, sample-size minimums, models) before any model
loads. The library never prints: it reports through a `Reporter`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ovi_cli.api import FeatureSpace, MetricValue, PluginContext, ReferenceSet, Reporter, SetMetric, resolve_options
from ovi_cli.bench.runlog import read_run_file
from ovi_cli.errors import OviError

FIDELITY_JSON = "fidelity.json"
FORMAT = "ovi-bench-fidelity/1"
CACHE_FORMAT = "ovi-feature-cache/1"
ALL = "all"  # the key of the whole run (every category pooled)
DEFAULT_FEATURES = ("clip",)
DEFAULT_METRICS = ("fd", "kid", "prdc")
CHUNK = 256  # images encoded between two cache writes


def fidelity_json_path(run: Path) -> Path:
    return Path(run) / FIDELITY_JSON


@dataclass
class FidelitySettings:
    """What feature spaces and metrics are built with (`PluginContext.settings`)."""

    encoder_model: str | None = None  # the CLIP of the runs (the `clip` space)
    batch_size: int = 32


@dataclass
class FidelityRequest:
    """What `ovi bench fidelity` was asked."""

    reference: str
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # plugin name -> its options
    encoder_model: str | None = None  # None: bench.json's (the run's own CLIP)
    batch_size: int = 32
    device: str = "auto"
    cache: Path | None = None  # None: $OVI_HOME/cache/features
    per_category: bool = True


# ---- images ----------------------------------------------------------------------------------------
@dataclass
class ImageSet:
    """Images to encode: their paths, content hashes and (for a run) categories."""

    label: str
    paths: list[Path]
    hashes: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # one per path (runs), empty for a reference


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_images(paths: Sequence[Path], where: str, *, same_size: bool) -> None:
    """Every file opens as an image (header read, no decode), and with `same_size` all share one size."""
    from PIL import Image, UnidentifiedImageError

    first: tuple[Path, tuple[int, int]] | None = None
    for p in paths:
        try:
            with Image.open(p) as im:
                size = im.size
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise OviError(f"unreadable image {str(p)!r} in {where}: {reason}") from None
        if same_size:
            if first is None:
                first = (p, size)
            elif size != first[1]:
                raise OviError(f"images of mixed sizes in {where}: {first[0].name} is {first[1][0]}x{first[1][1]}, "
                               f"{p.name} is {size[0]}x{size[1]} (a run's images share one size; check the folder)")


def run_images(run: Path) -> tuple[Any, ImageSet]:
    """(RunInfo, its images) with every category non-empty, every header readable, one size."""
    from ovi_cli.bench.score import list_items, open_run

    info = open_run(run)
    images = ImageSet(info.name, [])
    for category in info.categories:
        items = list_items(run, category)
        if not items:
            raise OviError(f"category {category!r} of run {str(run)!r} has no images (its samples/ folder is empty)")
        images.paths += [it.path for it in items]
        images.categories += [category] * len(items)
    check_images(images.paths, f"run {str(run)!r}", same_size=True)
    return info, images


@dataclass
class Reference:
    """A reference: an image folder (`images`) or a statistics store (`store`)."""

    source: str
    images: ImageSet | None = None
    store: Any = None

    @property
    def count(self) -> int:
        return self.store.count if self.store is not None else len(self.images.paths)  # type: ignore[union-attr]

    def describe(self) -> dict[str, Any]:
        if self.store is not None:
            return {"kind": "store", "source": self.source, "name": self.store.name, "count": self.count,
                    "encoder": self.store.describe()["encoder"]}
        return {"kind": "folder", "source": self.source, "count": self.count}


def open_reference(source: str) -> Reference:
    """An image folder or a statistics store (by path or name), or a one-line error."""
    from ovi_stats.images import find_images
    from ovi_stats.validate import looks_like_store

    path = Path(source).expanduser()
    if looks_like_store(path) or (not path.exists() and "/" not in source and "\\" not in source):
        from ovi_stats.store import open_store

        return Reference(source, store=open_store(source))
    if not path.exists():
        raise OviError(f"--reference {source!r} does not exist (an image folder or a statistics store)")
    if not path.is_dir():
        raise OviError(f"--reference {source!r} is a file: give a folder of real images or a statistics store")
    found = find_images(path)
    if not found:
        raise OviError(f"--reference {source!r} holds no images ({', '.join(_extensions())})")
    images = ImageSet(f"reference {source}", [path / f for f in found])
    # real photographs come in many sizes (COCO): each feature space resizes them its own way
    check_images(images.paths, f"--reference {source!r}", same_size=False)
    return Reference(source, images=images)


def _extensions() -> tuple[str, ...]:
    from ovi_stats.images import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


# ---- the feature cache -----------------------------------------------------------------------------
def default_cache_root() -> Path:
    from ovi_stats.store import ovi_home

    return ovi_home() / "cache" / "features"


class FeatureCache:
    """Features of one feature space (one `settings_key`), by image content hash.

    `ROOT/<hash of the settings key>/key.json` names the settings; `part-*.npz` files (written
    atomically, one per finished chunk) hold `keys` (content hashes) and `features`. Parts are only
    ever added, so concurrent writers and interrupted runs lose at most an unfinished chunk.
    """

    def __init__(self, root: Path, key: Mapping[str, Any]) -> None:
        text = json.dumps(dict(key), sort_keys=True)
        self.folder = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:20]
        self.key = dict(key)
        self.features: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self._read()

    def _read(self) -> None:
        if not self.folder.is_dir():
            return
        try:
            self.meta = json.loads((self.folder / "key.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            self.meta = {}
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as data:
                    for k, v in zip(data["keys"].tolist(), data["features"]):
                        self.features[str(k)] = v
            except (OSError, ValueError, KeyError):
                continue  # a damaged part: its images are encoded again

    def missing(self, hashes: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(h for h in hashes if h not in self.features))

    def add(self, keys: Sequence[str], features: np.ndarray) -> None:
        import io

        from ovi_cli.outputs import atomic_write_bytes, atomic_write_json, ensure_folder

        ensure_folder(self.folder)
        if not (self.folder / "key.json").exists():
            atomic_write_json(self.folder / "key.json", {"format": CACHE_FORMAT, "key": self.key, **self.meta})
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(list(keys)), features=np.asarray(features, dtype=np.float32))
        name = f"part-{os.getpid()}-{hashlib.sha256(''.join(keys).encode()).hexdigest()[:16]}.npz"
        atomic_write_bytes(self.folder / name, buf.getvalue())
        for k, v in zip(keys, np.asarray(features, dtype=np.float32)):
            self.features[k] = v

    def set_meta(self, **values: Any) -> None:
        from ovi_cli.outputs import atomic_write_json, ensure_folder

        self.meta.update(values)
        ensure_folder(self.folder)
        atomic_write_json(self.folder / "key.json", {"format": CACHE_FORMAT, "key": self.key, **self.meta})

    def matrix(self, hashes: Sequence[str]) -> np.ndarray:
        return np.stack([self.features[h] for h in hashes]).astype(np.float32)


# ---- the run ---------------------------------------------------------------------------------------
def _registry_classes(registry: Any, kind: str, names: Sequence[str]) -> dict[str, type]:
    return {n: registry.get(kind, n) for n in names}


def _run_encoder(infos: Sequence[Any], given: str | None) -> str | None:
    """The CLIP of the runs: `given`, else bench.json's encoder_model (all runs must agree)."""
    if given:
        return given
    found = {}
    for info in infos:
        settings = info.bench.get("settings") if isinstance(info.bench.get("settings"), dict) else {}
        enc = settings.get("encoder_model")
        if isinstance(enc, str) and enc:
            found[str(info.path)] = enc
    if len(set(found.values())) > 1:
        pairs = ", ".join(f"{k}: {v}" for k, v in found.items())
        raise OviError(f"the runs were made with different CLIP encoders ({pairs}): score them separately "
                       "or name one with --encoder-model")
    return next(iter(found.values()), None)


def _store_dim_of_encoder(source: str) -> int | None:
    """projection_dim from the encoder folder's image_encoder/config.json (no model loads), if readable."""
    from ovi_cli.hub import resolve_model_dir

    try:
        root = resolve_model_dir(source, what="CLIP encoder", flag="--encoder-model")
        cfg = json.loads((root / "image_encoder" / "config.json").read_text(encoding="utf-8"))
        return int(cfg["projection_dim"])
    except (OviError, OSError, ValueError, RecursionError, KeyError, TypeError):
        return None


def check_sizes(metrics: Mapping[str, SetMetric], n: int, what: str) -> None:
    for name, m in metrics.items():
        need = int(m.min_samples)
        if n < need:
            raise OviError(f"{what} has {n} image(s); metric {name!r} needs at least {need} "
                           f"({_why(name)}); use more images or leave {name} out with --metrics")


def _why(name: str) -> str:
    return {"fd": "a covariance", "kid": "an unbiased subset of 2", "prdc": "k nearest neighbours plus one"}.get(
        name, "its definition")


def bench_fidelity(runs: Sequence[Path], request: FidelityRequest, *, reporter: Reporter | None = None,
                   registry: Any = None) -> list[dict[str, Any]]:
    """Score each run's fidelity against `request.reference`; writes RUN/fidelity.json, returns the docs."""
    from ovi_cli.hub import check_models
    from ovi_cli.plugins import get_registry

    reporter = reporter or Reporter()
    registry = registry or get_registry()
    if request.batch_size < 1:
        raise OviError("--batch-size must be >= 1")
    if not runs:
        raise OviError("name at least one run folder")
    space_classes = _registry_classes(registry, "feature_space", request.features)
    metric_classes = _registry_classes(registry, "metric", request.metrics)
    for owner in request.options:
        if owner not in space_classes and owner not in metric_classes:
            raise OviError(f"--option {owner}.…: {owner!r} is neither a chosen feature space nor a chosen metric "
                           f"({', '.join([*space_classes, *metric_classes])})")

    # inputs first: runs, categories, images, the reference
    loaded = [run_images(Path(r)) for r in runs]
    reference = open_reference(request.reference)
    encoder = _run_encoder([info for info, _ in loaded], request.encoder_model)
    settings = FidelitySettings(encoder_model=encoder, batch_size=request.batch_size)

    import torch

    from ovi_cli.devices import resolve_device

    device = resolve_device(request.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def context(name: str, cls: type) -> PluginContext:
        opts = resolve_options(cls, name, request.options.get(name))
        return PluginContext(name=name, settings=settings, options=opts, device=device, dtype=dtype,
                             reporter=reporter, store=reference.store)

    metrics = {n: c(context(n, c)) for n, c in metric_classes.items()}
    spaces: dict[str, FeatureSpace] = {n: c(context(n, c)) for n, c in space_classes.items()}
    for name in spaces:
        if reference.store is not None and name != "clip":
            raise OviError(f"--reference {request.reference!r} is a statistics store: its embeddings are CLIP "
                           f"embeddings, so it serves --features clip only; give a folder of images for {name}")
        if name == "clip" and not encoder:
            raise OviError("the clip feature space needs the runs' CLIP: their bench.json names none; "
                           "give --encoder-model or --model")
    if reference.store is not None and encoder:
        dim = _store_dim_of_encoder(encoder)
        if dim is not None and dim != reference.store.dim:
            raise OviError(f"statistics store {reference.store.name!r} holds {reference.store.dim}-d embeddings of "
                           f"{reference.store.encoder.get('source')!r}; the runs' CLIP {encoder!r} makes {dim}-d "
                           "ones: another encoder space (build a store with the runs' --encoder-model)")
    for info, images in loaded:
        check_sizes(metrics, len(images.paths), f"run {str(info.path)!r}")
    check_sizes({n: m for n, m in metrics.items()}, reference.count, f"--reference {request.reference!r}")
    check_models([m for s in spaces.values() for m in s.required_models()], toy_hint=False)

    # features: hashed once, encoded once per space (cached)
    reporter.stage("hashing images")
    for _, images in loaded:
        images.hashes = [content_hash(p) for p in images.paths]
    if reference.images is not None:
        reference.images.hashes = [content_hash(p) for p in reference.images.paths]

    cache_root = Path(request.cache) if request.cache is not None else default_cache_root()
    results: dict[str, dict[str, Any]] = {str(info.path): {} for info, _ in loaded}
    for space_name, space in spaces.items():
        cache = FeatureCache(cache_root, space.settings_key())
        sets = [images for _, images in loaded] + ([reference.images] if reference.images is not None else [])
        _encode(space, space_name, cache, sets, request.batch_size, reporter,
                check_store=reference.store if space_name == "clip" else None)
        ref_set = _reference_set(reference, cache)
        for info, images in loaded:
            results[str(info.path)][space_name] = _compute(metrics, cache.matrix(images.hashes), images.categories,
                                                           ref_set, request.per_category, reporter, info.name)
    docs = []
    for info, _ in loaded:
        docs.append(_write(info, reference, results[str(info.path)], spaces, metrics))
    return docs


def _encode(space: FeatureSpace, name: str, cache: FeatureCache, sets: Sequence[ImageSet], batch_size: int,
            reporter: Reporter, check_store: Any = None) -> None:
    from ovi_stats.images import BadImage, load_rgb

    todo: dict[str, Path] = {}
    for s in sets:
        for h, p in zip(s.hashes, s.paths):
            if h not in cache.features:
                todo.setdefault(h, p)
    need_fingerprint = check_store is not None and not cache.meta.get("encoder_fingerprint")
    if not todo and not need_fingerprint:
        _check_store(check_store, cache)
        return
    reporter.stage(f"loading the {name} feature space")
    space.load()
    if check_store is not None:
        cache.set_meta(encoder_fingerprint=space.encoder_fingerprint())  # type: ignore[attr-defined]
        _check_store(check_store, cache)
    items = list(todo.items())
    reporter.start(f"{name} features", len(items))
    for start in range(0, len(items), CHUNK):
        chunk = items[start:start + CHUNK]
        feats = []
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b:b + batch_size]
            images = []
            for _, path in batch:
                try:
                    images.append(load_rgb(path))
                except BadImage as exc:
                    raise OviError(f"unreadable image {str(path)!r}: {exc}") from None
            feats.append(np.asarray(space.features(images), dtype=np.float32))
            reporter.advance(len(batch))
        cache.add([h for h, _ in chunk], np.concatenate(feats))


def _check_store(store: Any, cache: FeatureCache) -> None:
    if store is None:
        return
    fp = cache.meta.get("encoder_fingerprint")
    if fp and store.fingerprint != fp:
        raise OviError(f"statistics store {store.name!r} was built with encoder {store.encoder.get('source')!r} "
                       f"(fingerprint {store.fingerprint}) but the runs' CLIP has fingerprint {fp}: another encoder "
                       "space; build a store with the runs' --encoder-model")


def _reference_set(reference: Reference, cache: FeatureCache) -> ReferenceSet:
    if reference.store is not None:
        store = reference.store
        return ReferenceSet(count=store.count, features=np.asarray(store.embeddings, dtype=np.float32),
                            mean=store.mean.numpy(), cov=store.cov.numpy(), source=reference.source)
    feats = cache.matrix(reference.images.hashes)  # type: ignore[union-attr]
    return ReferenceSet(count=len(feats), features=feats, source=reference.source)


def _compute(metrics: Mapping[str, SetMetric], features: np.ndarray, categories: Sequence[str],
             reference: ReferenceSet, per_category: bool, reporter: Reporter, run_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {ALL: _values(metrics, features, reference)}
    if not per_category:
        return out
    cats = np.array(categories)
    out["categories"] = {}
    for category in dict.fromkeys(categories):
        sub = features[cats == category]
        values: dict[str, Any] = {}
        for name, m in metrics.items():
            if len(sub) < int(m.min_samples):
                values[name] = {"skipped": f"{len(sub)} image(s), {name} needs at least {int(m.min_samples)}"}
                reporter.warn(f"{run_name}: category {category!r} has {len(sub)} image(s): no {name} for it "
                              f"(needs {int(m.min_samples)})")
                continue
            values.update(_values({name: m}, sub, reference))
        out["categories"][category] = values
    return out


def _values(metrics: Mapping[str, SetMetric], features: np.ndarray, reference: ReferenceSet) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, m in metrics.items():
        if m.needs_vectors and reference.features is None:
            raise OviError(f"metric {name!r} needs the reference's feature vectors, but {reference.source!r} "
                           "offers only moments; use a metric that works from moments (fd)")
        for key, v in m.compute(features, reference).items():
            values[key] = metric_json(v)
    return values


def metric_json(v: MetricValue) -> dict[str, Any]:
    from ovi_cli.outputs import finite_or_none

    return finite_or_none({"value": v.value, "low": v.low, "high": v.high, "n": v.n, "n_ref": v.n_ref,
                           "details": v.details})


def _write(info: Any, reference: Reference, results: Mapping[str, Any], spaces: Mapping[str, FeatureSpace],
           metrics: Mapping[str, SetMetric]) -> dict[str, Any]:
    """Merge this reference's results into RUN/fidelity.json (other spaces' entries are kept)."""
    from ovi_cli.outputs import atomic_write_json

    path = fidelity_json_path(info.path)
    doc = read_fidelity(info.path) or {}
    doc.update(format=FORMAT, name=info.name)
    entries = doc.setdefault("spaces", {})
    for name, values in results.items():
        entries[name] = {"reference": reference.describe(), "settings": spaces[name].settings_key(),
                         "metrics": {m: dict(metrics[m].options) for m in metrics}, **values}
    atomic_write_json(path, doc)
    return doc


def read_fidelity(run: Path) -> dict[str, Any] | None:
    """RUN/fidelity.json, or None when there is none; a damaged one is a one-line error."""
    path = fidelity_json_path(run)
    if not path.is_file():
        return None
    return read_run_file(path, FORMAT, "an ovi fidelity file")
