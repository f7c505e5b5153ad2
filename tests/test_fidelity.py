"""`ovi bench fidelity`: the maths on exact values, the libraries' values, the run, the cache, the errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ovi_cli.api import ReferenceSet
from ovi_plugins.fidelity import maths
from ovi_plugins.toy.preset import toy_paths

pytest.importorskip("torchmetrics")
TOY_CLIP = str(toy_paths()["encoder"])
pytest.importorskip("prdc")


# ---- maths on exact values ---------------------------------------------------------------------
def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(50, 6))
    mu, cov = maths.mean_cov(x)
    assert maths.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_fd_of_known_gaussians_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = (1 + 0 + 4) + (1 + 1 + 4)  # ||mu1 - mu2||^2 + sum (sqrt v1 - sqrt v2)^2
    assert maths.gaussian_fd(mu1, v1, mu2, v2) == expected
    assert maths.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-12)
    # a rotation of both Gaussians changes nothing
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    got = maths.frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    assert got == pytest.approx(expected, abs=1e-9)


def test_own_fd_equals_torchmetrics_on_the_same_features():
    from ovi_plugins.fidelity.metrics import torchmetrics_fd

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 8)), rng.normal(0.3, 1.5, size=(60, 8))
    own = maths.frechet_distance(*maths.mean_cov(a), *maths.mean_cov(b))
    assert own == pytest.approx(torchmetrics_fd(a, b), rel=1e-6)


def _context(name, cls, **options):
    from ovi_cli.api import PluginContext, resolve_options

    return cls(PluginContext(name=name, options=resolve_options(cls, name, options)))


def test_fd_metric_from_moments_equals_from_vectors_and_interval_holds_value():
    from ovi_plugins.fidelity.metrics import FrechetDistance

    rng = np.random.default_rng(3)
    x, ref = rng.normal(size=(30, 5)), rng.normal(0.5, 1.0, size=(80, 5))
    metric = _context("fd", FrechetDistance, bootstrap=50)
    from_vectors = metric.compute(x, ReferenceSet(len(ref), features=ref))["fd"]
    mu, cov = maths.mean_cov(ref)
    from_moments = metric.compute(x, ReferenceSet(len(ref), mean=mu, cov=cov))["fd"]
    assert from_vectors.details["computed_by"] == "torchmetrics"
    assert from_moments.details["computed_by"] == "ovi (reference moments)"
    assert from_moments.value == pytest.approx(from_vectors.value, rel=1e-6)
    assert from_vectors.low <= from_vectors.value <= from_vectors.high
    assert (from_vectors.n, from_vectors.n_ref) == (30, 80)
    again = metric.compute(x, ReferenceSet(len(ref), features=ref))["fd"]
    assert (again.low, again.high) == (from_vectors.low, from_vectors.high)  # seeded


def test_kid_is_the_unbiased_cubic_mmd_over_one_full_subset():
    from ovi_plugins.fidelity.metrics import KernelDistance

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 4)), rng.normal(0.2, 1.0, size=(12, 4))
    got = _context("kid", KernelDistance, subsets=1, subset_size=12).compute(x, ReferenceSet(12, features=y))["kid"]

    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3

    m = 12
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert got.value == pytest.approx(expected, rel=1e-9)  # one subset of all 12: the permutation does not matter
    assert got.details["subset_size"] == 12 and got.n_ref == 12


def test_prdc_of_a_set_against_itself():
    from ovi_plugins.fidelity.metrics import PrecisionRecall

    x = np.random.default_rng(5).normal(size=(30, 4))
    metric = _context("prdc", PrecisionRecall, k=3)
    got = metric.compute(x, ReferenceSet(30, features=x))
    assert got["precision"].value == got["recall"].value == got["coverage"].value == 1.0
    assert got["precision"].details["k"] == 3 and metric.min_samples == 4


# ---- runs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> dict[str, Path]:
    """A toy benchmark run (real renders of 3 prompts x 3 per category: 18 images) and 24 reference renders."""
    from ovi_plugins.toy.eval import write_real_run

    root = tmp_path_factory.mktemp("fidelity")
    write_real_run(root / "run", images_per_prompt=3, seed=1, limit=3)
    write_real_run(root / "refrun", images_per_prompt=3, seed=9, limit=4)
    (root / "ref").mkdir()
    for p in sorted((root / "refrun").glob("*/samples/*.png")):
        shutil.copy(p, root / "ref" / f"{p.parent.parent.name}-{p.name}")
    return {"run": root / "run", "ref": root / "ref"}


@pytest.fixture
def run(toy_runs, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(toy_runs["run"], dst)
    return dst


def _cache_parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/part-*.npz"))


def test_fidelity_against_a_folder_writes_per_run_and_category(run, toy_runs, tmp_path, run_cli):
    cache = tmp_path / "cache"
    res = run_cli("bench", "fidelity", run, "--reference", toy_runs["ref"], "--model", "toy", "--cache", cache,
                  "--nearest-k", "2", "--bootstrap", "20", "--quiet")
    assert res.code == 0, res.stderr
    doc = json.loads((run / "fidelity.json").read_text())
    entry = doc["spaces"]["clip"]
    assert entry["reference"]["count"] == 24 and entry["reference"]["kind"] == "folder"
    assert set(entry["all"]) == {"fd", "kid", "precision", "recall", "density", "coverage"}
    assert entry["all"]["fd"]["n"] == 18 and entry["all"]["fd"]["n_ref"] == 24
    assert set(entry["categories"]) == {"single", "binding"}
    assert entry["categories"]["single"]["fd"]["n"] == 9
    assert entry["all"]["precision"]["details"]["k"] == 2
    parts = _cache_parts(cache)
    stored = sum(len(np.load(p)["keys"]) for p in parts)
    assert stored == 18 + 24  # every image encoded once
    # a rerun encodes nothing (the cache holds every image) and gives the same numbers
    res = run_cli("bench", "fidelity", run, "--reference", toy_runs["ref"], "--model", "toy", "--cache", cache,
                  "--nearest-k", "2", "--bootstrap", "20", "--quiet")
    assert res.code == 0, res.stderr
    assert _cache_parts(cache) == parts
    again = json.loads((run / "fidelity.json").read_text())["spaces"]["clip"]
    assert again["all"]["fd"] == entry["all"]["fd"]
    # the table reads the numbers beside the compositional ones, and plots composition against FD
    res = run_cli("bench", "table", run, "--json")
    assert res.code == 0, res.stderr
    scores = json.loads(res.stdout)["rows"][0]["scores"]
    assert scores["fidelity:fd:clip"]["mean"] == pytest.approx(entry["all"]["fd"]["value"])
    assert scores["fidelity:fd:clip"]["low"] == pytest.approx(entry["all"]["fd"]["low"])


def test_the_fd_equals_torchmetrics_on_the_cached_features(run, toy_runs, tmp_path):
    from ovi_cli.bench.fidelity import FidelityRequest, bench_fidelity
    from ovi_plugins.fidelity.metrics import torchmetrics_fd

    cache = tmp_path / "cache"
    req = FidelityRequest(reference=str(toy_runs["ref"]), metrics=["fd"], encoder_model=TOY_CLIP, cache=cache,
                          options={"fd": {"bootstrap": 0}}, per_category=False)
    doc = bench_fidelity([run], req)[0]
    feats = {}
    for p in _cache_parts(cache):
        with np.load(p) as d:
            feats.update(zip(d["keys"].tolist(), d["features"]))
    from ovi_cli.bench.fidelity import content_hash

    gen = np.stack([feats[content_hash(p)] for p in sorted(run.glob("*/samples/*.png"))])
    ref = np.stack([feats[content_hash(p)] for p in sorted(toy_runs["ref"].glob("*.png"))])
    assert doc["spaces"]["clip"]["all"]["fd"]["value"] == pytest.approx(torchmetrics_fd(gen, ref), rel=1e-6)


def test_a_store_serves_directly_without_encoding_the_reference(run, tmp_path):
    from ovi_cli.bench.fidelity import FidelityRequest, bench_fidelity
    from ovi_plugins.toy.preset import toy_paths
    from ovi_stats.store import open_store

    store = open_store(toy_paths()["stats"])
    cache = tmp_path / "cache"
    req = FidelityRequest(reference=str(store.path), metrics=["fd", "kid"], encoder_model=TOY_CLIP, cache=cache,
                          options={"fd": {"bootstrap": 0}, "kid": {"subsets": 5}}, per_category=False)
    doc = bench_fidelity([run], req)[0]
    entry = doc["spaces"]["clip"]
    assert entry["reference"]["kind"] == "store" and entry["all"]["fd"]["n_ref"] == store.count
    assert entry["all"]["fd"]["details"]["computed_by"] == "ovi (reference moments)"
    assert sum(len(np.load(p)["keys"]) for p in _cache_parts(cache)) == 18  # only the run's images
    # the stored moments give the FD torchmetrics gives on the stored embeddings (float16) and the run's features
    from ovi_cli.bench.fidelity import content_hash
    from ovi_plugins.fidelity.metrics import torchmetrics_fd

    feats = {}
    for p in _cache_parts(cache):
        with np.load(p) as d:
            feats.update(zip(d["keys"].tolist(), d["features"]))
    gen = np.stack([feats[content_hash(p)] for p in sorted(run.glob("*/samples/*.png"))])
    lib = torchmetrics_fd(gen, np.asarray(store.embeddings, dtype=np.float64))
    assert entry["all"]["fd"]["value"] == pytest.approx(lib, rel=1e-3)


def test_an_interrupted_run_leaves_no_half_file_and_resumes(run, toy_runs, tmp_path, monkeypatch):
    from ovi_cli import api
    from ovi_cli.bench import fidelity

    monkeypatch.setattr(fidelity, "CHUNK", 8)

    class Interrupt(api.Reporter):
        done = 0

        def advance(self, done: int = 1, info: str = "") -> None:
            self.done += done
            if self.done >= 16:
                raise KeyboardInterrupt

    cache = tmp_path / "cache"
    req = fidelity.FidelityRequest(reference=str(toy_runs["ref"]), metrics=["fd"], encoder_model=TOY_CLIP, cache=cache,
                                   batch_size=4, options={"fd": {"bootstrap": 0}})
    with pytest.raises(KeyboardInterrupt):
        fidelity.bench_fidelity([run], req, reporter=Interrupt())
    assert not (run / "fidelity.json").exists()
    assert not list(run.glob(".*ovi-tmp")) and not list(cache.glob("*/.*ovi-tmp"))
    kept = sum(len(np.load(p)["keys"]) for p in _cache_parts(cache))
    assert kept == 8  # the first finished chunk survived; the second was interrupted

    class Count(api.Reporter):
        done = 0

        def advance(self, done: int = 1, info: str = "") -> None:
            self.done += done

    counter = Count()
    fidelity.bench_fidelity([run], req, reporter=counter)
    assert counter.done == 18 + 24 - 8 and (run / "fidelity.json").exists()


def test_dinov2_space_is_the_pooler_output_of_the_folder_model(tmp_path, toy_runs):
    from PIL import Image

    from ovi_cli.api import PluginContext
    from ovi_plugins.fidelity.spaces import Dinov2Space
    from tests.helpers.tiny_fidelity import make_dinov2_repo

    repo = make_dinov2_repo(tmp_path / "dinov2")
    space = Dinov2Space(PluginContext(name="dinov2", options={"model": str(repo)}, device="cpu"))
    space.load()
    images = [Image.open(p).convert("RGB") for p in sorted(toy_runs["ref"].glob("*.png"))[:3]]
    got = space.features(images)
    import torch
    from transformers import AutoImageProcessor, Dinov2Model

    model = Dinov2Model.from_pretrained(repo).eval()
    pixels = AutoImageProcessor.from_pretrained(repo)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels)
    want = out.pooler_output  # the CLS token after the final layer norm (= last_hidden_state[:, 0])
    np.testing.assert_allclose(want.numpy(), out.last_hidden_state[:, 0].numpy(), atol=1e-6)
    assert got.shape == (3, model.config.hidden_size)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)


def test_dinov2_from_the_cli(run, toy_runs, tmp_path, run_cli):
    from tests.helpers.tiny_fidelity import make_dinov2_repo

    repo = make_dinov2_repo(tmp_path / "dinov2")
    res = run_cli("bench", "fidelity", run, "--reference", toy_runs["ref"], "--features", "clip,dinov2",
                  "--metrics", "fd", "--model", "toy", "--dinov2-model", repo, "--cache", tmp_path / "c", "--quiet")
    assert res.code == 0, res.stderr
    spaces = json.loads((run / "fidelity.json").read_text())["spaces"]
    assert set(spaces) == {"clip", "dinov2"}
    assert spaces["dinov2"]["all"]["fd"]["details"]["dim"] == 32


def test_dinov2_hub_id_offline_is_one_line(run, toy_runs, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    res = run_cli("bench", "fidelity", run, "--reference", toy_runs["ref"], "--features", "dinov2",
                  "--cache", tmp_path / "c", "--quiet")
    assert res.code != 0 and "facebook/dinov2-base" in res.stderr and "--dinov2-model" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


# ---- errors, one line each, before any model loads ------------------------------------------------
def _one_line(res, *needles):
    assert res.code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_errors_are_one_line(run, toy_runs, tmp_path, run_cli):
    from PIL import Image

    base = ["bench", "fidelity", "--model", "toy", "--cache", str(tmp_path / "c"), "--quiet"]
    # too few images for KID's subsets / PRDC's k (the minimum named)
    small = tmp_path / "small"
    small.mkdir()
    for p in sorted(toy_runs["ref"].glob("*.png"))[:3]:
        shutil.copy(p, small / p.name)
    _one_line(run_cli(*base, run, "--reference", small, "--nearest-k", "5"), "3 image(s)", "'prdc'", "at least 6")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next(toy_runs["ref"].glob("*.png")), one / "a.png")
    _one_line(run_cli(*base, run, "--reference", one, "--metrics", "fd"), "'fd'", "at least 2", "a covariance")
    # a store from another encoder space: the tiny test CLIP (16-d) against the toy store (64-d)
    from ovi_plugins.toy.preset import toy_paths

    store = toy_paths()["stats"]
    _one_line(run_cli(*base, run, "--reference", store, "--features", "dinov2"), "statistics store", "clip only")
    # an empty category
    empty = tmp_path / "empty"
    shutil.copytree(run, empty)
    for p in (empty / "binding" / "samples").glob("*.png"):
        p.unlink()
    _one_line(run_cli(*base, empty, "--reference", toy_runs["ref"]), "'binding'", "no images")
    # images of mixed sizes
    mixed = tmp_path / "mixed"
    shutil.copytree(run, mixed)
    victim = sorted((mixed / "single" / "samples").glob("*.png"))[0]
    Image.new("RGB", (10, 12)).save(victim)
    _one_line(run_cli(*base, mixed, "--reference", toy_runs["ref"]), "mixed sizes", "10x12")
    # an unreadable file
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    sorted((broken / "single" / "samples").glob("*.png"))[0].write_bytes(b"not a png")
    _one_line(run_cli(*base, broken, "--reference", toy_runs["ref"]), "unreadable image")
    # inception without its weights file: where to get it
    _one_line(run_cli(*base, run, "--reference", toy_runs["ref"], "--features", "inception",
                      "--inception-weights", tmp_path / "none.pth"), "InceptionV3", "--inception-weights")
    # unknown metric
    _one_line(run_cli(*base, run, "--reference", toy_runs["ref"], "--metrics", "nope"), "unknown metric")


def test_a_store_of_another_encoder_is_refused(run, tmp_path, run_cli, encoder_repo):
    from ovi_plugins.toy.preset import toy_paths

    store = toy_paths()["stats"]
    res = run_cli("bench", "fidelity", run, "--reference", store, "--encoder-model", encoder_repo,
                  "--cache", tmp_path / "c", "--quiet")
    _one_line(res, "statistics store", "another encoder space")


# ---- the seam: a third-party metric and feature space ----------------------------------------------
@pytest.fixture
def metric_plugin():
    from ovi_cli.plugins import load_registry, set_registry
    from tests.helpers import plugin_metric

    set_registry(load_registry(extra=[("metric-example", plugin_metric)]))
    yield
    set_registry(None)


def test_a_plugin_metric_and_feature_space_run_through_bench_fidelity(metric_plugin, run, toy_runs, tmp_path,
                                                                      run_cli):
    from PIL import Image

    res = run_cli("plugins", "--json")
    kinds = {(p["name"], p["kind"]) for p in json.loads(res.stdout)["plugins"]}
    assert {("mean-gap", "metric"), ("pixels", "feature_space")} <= kinds
    res = run_cli("bench", "fidelity", run, "--reference", toy_runs["ref"], "--features", "pixels",
                  "--metrics", "mean-gap,fd", "-O", "mean-gap.scale=2", "--bootstrap", "0",
                  "--cache", tmp_path / "c", "--quiet")
    assert res.code == 0, res.stderr
    entry = json.loads((run / "fidelity.json").read_text())["spaces"]["pixels"]

    def rgb(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) / 255
                         for p in paths])

    gen, ref = rgb(sorted(run.glob("*/samples/*.png"))), rgb(sorted(toy_runs["ref"].glob("*.png")))
    want = 2 * float(np.linalg.norm(gen.mean(axis=0) - ref.mean(axis=0)))
    assert entry["all"]["mean-gap"]["value"] == pytest.approx(want, rel=1e-5)
    assert entry["all"]["mean-gap"]["details"] == {"scale": 2.0}
    want_fd = maths.frechet_distance(*maths.mean_cov(gen), *maths.mean_cov(ref))
    assert entry["all"]["fd"]["value"] == pytest.approx(want_fd, rel=1e-4, abs=1e-6)
    assert set(entry["categories"]["single"]) == {"mean-gap", "fd"}


def test_a_missing_metric_library_names_the_extra(monkeypatch):
    import sys

    from ovi_cli.errors import OviError
    from ovi_plugins.fidelity.metrics import PrecisionRecall

    monkeypatch.setitem(sys.modules, "prdc", None)  # as if `prdc` were not installed
    x = np.zeros((8, 2))
    with pytest.raises(OviError, match=r"pip install 'ovi\[fidelity\]'"):
        _context("prdc", PrecisionRecall).compute(x, ReferenceSet(8, features=x))
