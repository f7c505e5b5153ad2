"""Stores: recognised by their marker, validated when opened, replaced only when they are stores
(issue 12, items 1 and 4). Each case here was a traceback, silent corruption or data loss on the old main."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ovi_cli.errors import OviError
from ovi_stats.store import StatsStore, list_stores, open_store, stats_root, write_store
from ovi_stats.validate import MARKER, BadStore, check_replaceable, store_kind
from tests.helpers.reliability import one_line_error, snapshot


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))


def _emb(n=60, d=16, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, d)) + 0.5).astype(np.float32)


def _store(path: Path, n=60, encoder=None, seed=0) -> StatsStore:
    return write_store(path, _emb(n, seed=seed), [f"{i}.png" for i in range(n)],
                       encoder=encoder or {"source": "tiny/encoder", "fingerprint": "f00d"})


def _edit_meta(path: Path, change) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta = change(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _edit_moments(path: Path, key: str, value) -> None:
    t = load_file(str(path / "moments.safetensors"))
    if value is None:
        del t[key]
    else:
        t[key] = value
    save_file(t, str(path / "moments.safetensors"))


def _object_npy(path: Path) -> None:
    np.save(path / "embeddings.npy", np.array([{"a": 1}] * 60, dtype=object), allow_pickle=True)


def _truncate(path: Path) -> None:
    p = path / "embeddings.npy"
    p.write_bytes(p.read_bytes()[:-100])


def _foreign_index(path: Path) -> None:
    other = _store(path.parent / "other", n=30, seed=1)
    shutil.copy(other.path / "index.faiss", path / "index.faiss")
    shutil.rmtree(other.path)


DAMAGE = {
    "meta without count": (lambda p: _edit_meta(p, lambda m: {k: v for k, v in m.items() if k != "count"}),
                           "meta.json has no 'count'"),
    "meta as a list": (lambda p: _edit_meta(p, lambda m: [m]), "meta.json holds a JSON list, not an object"),
    "count as text": (lambda p: _edit_meta(p, lambda m: {**m, "count": "60"}), "count is '60'"),
    "wrong count": (lambda p: _edit_meta(p, lambda m: {**m, "count": 50}),
                    "embeddings.npy has shape (60, 16), but meta.json says 50 embeddings"),
    "missing embeddings": (lambda p: (p / "embeddings.npy").unlink(), "embeddings.npy is missing"),
    "truncated embeddings": (_truncate, "embeddings.npy is truncated"),
    "object embeddings": (_object_npy, "embeddings.npy holds object values, not floats"),
    "files.json not JSON": (lambda p: (p / "files.json").write_text("[1,"), "files.json is not readable JSON"),
    "short files.json": (lambda p: (p / "files.json").write_text(json.dumps(["a.png"] * 59)),
                         "files.json names 59 files, but the store holds 60 embeddings"),
    "files.json of numbers": (lambda p: (p / "files.json").write_text(json.dumps(list(range(60)))),
                              "files.json must be a JSON list of file names"),
    "index of another store": (_foreign_index, "index.faiss holds 30 vectors of dimension 16, but the store holds 60"),
    "NaN moments": (lambda p: _edit_moments(p, "mean", torch.full((16,), float("nan"), dtype=torch.float64)),
                    "moments.safetensors: mean holds NaN or infinite values"),
    "moments without cov": (lambda p: _edit_moments(p, "cov", None), "moments.safetensors has no 'cov'"),
    "moments not safetensors": (lambda p: (p / "moments.safetensors").write_bytes(b"\x00" * 10),
                                "moments.safetensors is not readable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_one_line_naming_it_and_the_problem(tmp_path, case, run_cli):
    damage, problem = DAMAGE[case]
    store = _store(tmp_path / "s")
    damage(store.path)
    with pytest.raises(BadStore) as info:
        open_store(store.path)
    msg = str(info.value)
    assert msg == f"bad statistics store {str(store.path)!r}: {msg.split(': ', 1)[1]}" and "\n" not in msg
    assert problem in msg
    one_line_error(run_cli("stats", "info", store.path), str(store.path), problem)


def test_listing_and_gen_skip_a_bad_store_with_a_warning(tmp_path, run_cli, tiny_gen_args, encoders, encoder_repo):
    """Old main: one bad store in the stores folder broke `ovi stats list` and gen's automatic choice."""
    enc = {"source": str(encoder_repo), "fingerprint": encoders.fingerprint()}
    good = _store(stats_root() / "good", encoder=enc)
    bad = _store(stats_root() / "zz-newest-but-bad", encoder=enc)
    _edit_meta(bad.path, lambda m: {**m, "created": "9999", "count": 61})
    (stats_root() / "photos").mkdir()  # a folder that is not a store: silently not listed
    warned = []
    assert [s.name for s in list_stores(warn=warned.append)] == ["good"]
    assert len(warned) == 1 and "zz-newest-but-bad" in warned[0] and "meta.json says 61" in warned[0]
    res = run_cli("stats", "list", "--json")
    assert res.code == 0 and [s["name"] for s in json.loads(res.stdout) if not s["preset"]] == ["good"]
    assert "zz-newest-but-bad" in res.stderr and "Traceback" not in res.stderr
    out = tmp_path / "g.png"
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "-c", "mahalanobis", "-o", out)
    assert res.code == 0, res.stderr
    assert json.loads(out.with_suffix(".json").read_text())["models"]["stats"]["path"] == str(good.path)
    assert "zz-newest-but-bad" in res.stderr


def test_wrong_count_is_refused_instead_of_a_reshape_error_with_nn_k(tmp_path, run_cli, tiny_gen_args):
    """Old main: a meta.json count above the real rows was reported as truth; `--nn-k` above the real
    rows then failed deep in the constraint with `cannot reshape`."""
    store = _store(tmp_path / "s")
    _edit_meta(store.path, lambda m: {**m, "count": 80})
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "-c", "nn", "--nn-k", "70",
                  "--stats", store.path, "-o", tmp_path / "x.png")
    one_line_error(res, f"bad statistics store {str(store.path)!r}", "meta.json says 80")
    assert not list(tmp_path.glob("x.*"))


# ---- recognising stores ------------------------------------------------------------------------
def test_stores_carry_a_marker_and_legacy_v1_stores_are_still_read(tmp_path):
    store = _store(tmp_path / "s")
    assert json.loads((store.path / MARKER).read_text()) == {"kind": "ovi-statistics-store", "format_version": 1}
    assert store_kind(store.path) == "marked"
    (store.path / MARKER).unlink()  # what every store built before the marker looks like
    assert store_kind(store.path) == "legacy" and open_store(store.path).count == 60
    from ovi_plugins.toy.preset import MODELS_DIR  # the shipped toy store predates the marker

    assert store_kind(MODELS_DIR / "stats") == "legacy" and open_store(MODELS_DIR / "stats").count > 0
    (tmp_path / "look-alike").mkdir()
    (tmp_path / "look-alike" / "meta.json").write_text(json.dumps({"format_version": 1}))
    assert store_kind(tmp_path / "look-alike") is None


@pytest.mark.parametrize("kind", ["marked", "legacy"])
def test_force_replaces_a_store_but_never_a_users_file_in_it(tmp_path, kind):
    store = _store(tmp_path / "s")
    if kind == "legacy":
        (store.path / MARKER).unlink()
    check_replaceable(store.path)
    (store.path / "notes.txt").write_text("mine")
    with pytest.raises(OviError, match="also holds 1 file.*'notes.txt'.*refusing to delete"):
        check_replaceable(store.path)
    with pytest.raises(OviError, match="refusing"):
        _store(store.path, seed=3)
    assert (store.path / "notes.txt").read_text() == "mine"
    (store.path / "notes.txt").unlink()
    assert _store(store.path, seed=3).count == 60


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"p{i}.png")
    return root


FORCE_CASES = {
    "a folder holding a user's file": ("user", "is not an ovi statistics store"),
    "the source image folder": ("source", "would replace the image folder"),
    "a folder that contains the source": ("parent", "would replace the image folder"),
    "a plain file": ("file", "is a file, not a statistics store"),
}


@pytest.mark.parametrize("case", list(FORCE_CASES))
def test_build_stats_force_refuses_what_is_not_a_store(tmp_path, photos, run_cli, case):
    """Old main: `--force` deleted any folder (a user's file, the source images) and left a stray
    `.NAME.old-*` beside a plain file. Refused before any model loads (the encoder here does not exist)."""
    kind, needle = FORCE_CASES[case]
    target = {"user": tmp_path / "mine", "source": photos, "parent": tmp_path, "file": tmp_path / "afile"}[kind]
    if kind == "user":
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    if kind == "file":
        target.write_text("a file")
    before = snapshot(tmp_path)
    res = run_cli("build-stats", photos, "--out", target, "--force", "--encoder-model", tmp_path / "no-such-model")
    one_line_error(res, needle)
    assert snapshot(tmp_path) == before


def test_merge_and_from_embeddings_force_refuse_what_is_not_a_store(tmp_path, run_cli, encoder_repo):
    a, b = _store(tmp_path / "a"), _store(tmp_path / "b", seed=1)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")
    np.save(tmp_path / "dump.npy", _emb(10))
    before = snapshot(tmp_path)
    one_line_error(run_cli("stats", "merge", a.path, b.path, "--out", mine, "--force"),
                   "is not an ovi statistics store")
    one_line_error(run_cli("build-stats", "--from-embeddings", tmp_path / "dump.npy", "--out", mine, "--force",
                           "--encoder-model", encoder_repo), "is not an ovi statistics store")
    one_line_error(run_cli("build-stats", "--from-embeddings", tmp_path / "dump.npy", "--out", tmp_path, "--force",
                           "--encoder-model", encoder_repo), "would replace the input file")
    one_line_error(run_cli("stats", "merge", a.path, b.path, "--out", tmp_path, "--force"), "would replace the store")
    assert snapshot(tmp_path) == before
    res = run_cli("stats", "merge", a.path, b.path, "--out", tmp_path / "m", "--quiet")
    assert res.code == 0, res.stderr
    res = run_cli("stats", "merge", b.path, a.path, "--out", tmp_path / "m", "--force", "--quiet")
    assert res.code == 0 and open_store(tmp_path / "m").files[:1] == ["0.png"], res.stderr


def test_bad_file_list_json_is_one_line(tmp_path, run_cli, encoder_repo):
    """Old main: `--from-embeddings` with a bad JSON `--file-list` raised JSONDecodeError."""
    np.save(tmp_path / "dump.npy", _emb(10))
    (tmp_path / "names.json").write_text('["a", "b",')
    res = run_cli("build-stats", "--from-embeddings", tmp_path / "dump.npy", "--file-list", tmp_path / "names.json",
                  "--out", tmp_path / "s", "--encoder-model", tmp_path / "no-such-model")
    one_line_error(res, "file list", "is not valid JSON")
    assert not (tmp_path / "s").exists()
