"""Issue 22, hostile cases (the stores, the build, the plugins' names and hooks): each reproduced as
found, then held."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_cli.errors import OviError
from ovi_stats.store import StatsStore, merge_stores, open_store, write_store
from tests.helpers.reliability import one_line_error

ENC = {"source": "tiny/encoder", "fingerprint": "f00d"}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))


def _emb(n=40, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _store(path: Path, n=40, seed=0, source_dir="/data/imgs", start=0) -> StatsStore:
    return write_store(path, _emb(n, seed=seed), [f"{i:04d}.png" for i in range(start, start + n)],
                       encoder=ENC, source_dir=source_dir)


# ---- `ovi stats merge S S` counted every image twice ------------------------------------------
def test_merge_refuses_the_same_store_twice_a_symlink_a_copy_and_shared_images(run_cli, tmp_path):
    s = _store(tmp_path / "s")
    (tmp_path / "link").symlink_to(tmp_path / "s")
    shutil.copytree(tmp_path / "s", tmp_path / "copy")
    cases = {"same": [s.path, s.path], "symlink": [s.path, tmp_path / "link"], "copy": [s.path, tmp_path / "copy"]}
    for case, stores in cases.items():
        out = tmp_path / f"m-{case}"
        line = one_line_error(run_cli("stats", "merge", *stores, "--out", out), "counted twice")
        assert not out.exists(), (case, line)
    # two shards that share images (the whole folder and one of its shards)
    shard = write_store(tmp_path / "shard", _emb(10, seed=0), [f"{i:04d}.png" for i in range(10)], encoder=ENC,
                        source_dir="/data/imgs")
    one_line_error(run_cli("stats", "merge", s.path, shard.path, "--out", tmp_path / "m4"), "0000.png",
                   "count it twice")
    # disjoint shards of one folder still merge, and count each image once
    other = _store(tmp_path / "other", n=10, seed=1, start=40)
    res = run_cli("stats", "merge", s.path, other.path, "--out", tmp_path / "ok", "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["count"] == 50
    with pytest.raises(OviError, match="given twice"):
        merge_stores([s, open_store(s.path)], tmp_path / "m5")


# ---- a store replaced in place is noticed -----------------------------------------------------
def test_store_rebuilt_in_place_is_noticed(tmp_path):
    s = _store(tmp_path / "s", seed=0)
    recorded = s.content_fingerprint()
    assert recorded == s.describe()["content"] and recorded == open_store(s.path).content_fingerprint()
    shutil.copytree(s.path, tmp_path / "copy")
    assert StatsStore(tmp_path / "copy").content_fingerprint() == recorded  # content, not place or time
    _store(tmp_path / "s", seed=1)  # `build-stats --force` at the same path
    with pytest.raises(OviError, match="changed on disk"):
        s.check_unchanged()
    with pytest.raises(OviError, match="changed on disk"):
        s.embeddings  # noqa: B018 - the old moments must not be paired with the new rows
    fresh = open_store(s.path)
    fresh.check_unchanged()
    with pytest.raises(OviError, match="changed on disk"):
        fresh.check_unchanged(recorded)  # what a run recorded before the rebuild


def test_stats_info_shows_the_content_fingerprint(run_cli, tmp_path):
    s = _store(tmp_path / "s")
    res = run_cli("stats", "info", s.path)
    assert res.code == 0 and f"content      {s.content_fingerprint()}" in res.stdout
    assert json.loads(run_cli("stats", "info", s.path, "--json").stdout)["content"] == s.content_fingerprint()


# ---- build-stats: rank stores left behind, workers under a file-size limit ---------------------
def _images(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (64, 64), (40 * i % 255, 90, 200)).save(folder / f"{i:03d}.png")
    return folder


def test_single_process_build_removes_a_killed_torchrun_builds_rank_stores(run_cli, tmp_path):
    from ovi_stats.ranks import rank_store_path, ranks_dir

    images = _images(tmp_path / "imgs")
    target = tmp_path / "store"
    left = rank_store_path(target, (1, 2))  # what a killed 2-rank build leaves: a rank store, a checkpoint
    _store(left, n=3)
    (left.parent / f".{left.name}.partial").mkdir()
    assert ranks_dir(target).is_dir()
    res = run_cli("build-stats", images, "--model", "toy", "--out", target, "--workers", "0", "--quiet", "--resume")
    assert res.code == 0, res.stderr
    assert open_store(target).count == 6 and not ranks_dir(target).exists()
    # a folder of that name holding anything else is not ovi's to remove
    (ranks_dir(target)).mkdir()
    (ranks_dir(target) / "notes.txt").write_text("mine")
    res = run_cli("build-stats", images, "--model", "toy", "--out", target, "--workers", "0", "--quiet", "--force")
    assert res.code == 0 and (ranks_dir(target) / "notes.txt").read_text() == "mine"


def test_workers_under_a_file_size_limit_exit_2_with_one_line(tmp_path):
    """Worker processes pass batches in shared-memory files, bounded by `ulimit -f`: the build hung
    forever with worker tracebacks. Now: refused before the workers start."""
    images = _images(tmp_path / "imgs", n=4)
    limit = 100 * 1024  # a toy batch of these 4 images is 4 * 3 * 64 * 64 * 4 bytes = 192 KiB

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    ovi = str(Path(sys.executable).with_name("ovi"))
    res = subprocess.run([ovi, "build-stats", str(images), "--model", "toy", "--out", str(tmp_path / "s"),
                          "--workers", "2", "--quiet"], capture_output=True, text=True, timeout=300,
                         preexec_fn=limited, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "ulimit -f" in lines[0] and "--resume --workers 0" in lines[0]
    assert not (tmp_path / "s").exists()
    res = subprocess.run([ovi, "build-stats", str(images), "--model", "toy", "--out", str(tmp_path / "s"),
                          "--workers", "0", "--quiet", "--resume"], capture_output=True, text=True, timeout=300,
                         preexec_fn=limited, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr  # what the line advises works under the same limit
    assert open_store(tmp_path / "s").count == 4


def test_worker_file_limit_check_exact():
    from ovi_cli.checks import check_worker_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    check_worker_file_limit(0, 10**15)  # no workers: no shared-memory files
    if soft == resource.RLIM_INFINITY:
        check_worker_file_limit(2, 10**15)


# ---- names plugins give are never paths; hook failures are named -------------------------------
def _registry_with(module_name: str, code: str):
    import types

    from ovi_cli.plugins import load_registry

    module = types.ModuleType(module_name)
    exec(code, module.__dict__)  # noqa: S102 - a test plugin, written here
    return load_registry(extra=[(module_name, module)], third_party=False)


BAD_NAMES = ["../evil", "..", ".", ".hidden", "a/b", "x\\y", "bell\x07", " padded", "z" * 101]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_scorer_and_benchmark_names_that_are_not_file_names_are_refused(name):
    reg = _registry_with("badnames", f'''
from ovi_cli import hookimpl
from ovi_cli.api import Benchmark, ImageScore, Scorer

class S(Scorer):
    name = {name!r}
    def score(self, items, inputs):
        return [ImageScore(0.0, {{}}) for _ in items]

class B(Benchmark):
    name = "fine"
    categories = ({name!r},)
    def prompts(self, category):
        return ["a red star"]

@hookimpl
def register_scorers(register):
    register(S)

@hookimpl
def register_benchmarks(register):
    register(B)
''')
    assert name not in reg.names("scorer") and "fine" not in reg.names("benchmark")
    errors = [f.error for f in reg.failures if f.plugin == "badnames"]
    assert len(errors) == 2, errors
    assert any(e.startswith("register_scorers: ") and "cannot be used as a file name" in e for e in errors)
    assert any(e.startswith("register_benchmarks: ") and "category" in e for e in errors)


def test_check_path_name_accepts_plain_names():
    from ovi_cli.checks import check_path_name

    for name in ("blip-vqa", "3-in-1", "t2i-compbench", "color", "3d_spatial", "oracle", "ÿ-ünicode"):
        assert check_path_name(name, "scorer name") == name
    with pytest.raises(OviError):
        check_path_name("", "scorer name")
    with pytest.raises(OviError):
        check_path_name(3, "scorer name")


def test_a_failing_hook_is_reported_by_plugin_and_hook(run_cli, monkeypatch):
    from ovi_cli.plugins import set_registry

    reg = _registry_with("hooky", '''
from ovi_cli import hookimpl

@hookimpl
def register_priors(register):
    raise SystemExit(3)
''')
    set_registry(reg)
    try:
        res = run_cli("plugins", "--json")
        failures = json.loads(res.stdout)["failures"]
        assert [f["error"] for f in failures if f["plugin"] == "hooky"] == ["register_priors: SystemExit: 3"]
        res = run_cli("plugins")
        assert "'hooky'" in res.stdout and "register_priors" in res.stdout
    finally:
        set_registry(None)


# ---- store files that are not regular files: a FIFO blocked `stats info` forever ---------------
@pytest.mark.parametrize("name", ["meta.json", "files.json", "moments.safetensors", "embeddings.npy", "index.faiss"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_store_files_that_are_not_regular_files_are_one_line(run_cli, tmp_path, name, kind):
    s = _store(tmp_path / "s")
    p = s.path / name
    p.unlink()
    if kind == "fifo":
        os.mkfifo(p)  # no writer: reading it blocked ovi forever
    elif kind == "dev-zero":
        p.symlink_to("/dev/zero")  # endless
    else:
        p.mkdir()
    one_line_error(run_cli("stats", "info", s.path), "not a regular file", name)
    res = run_cli("stats", "list", "--json")
    assert res.code == 0 and "not a regular file" not in res.stdout
