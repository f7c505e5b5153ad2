"""The store format and API: write/open, exact neighbours, newest-by-encoder lookup, mismatch refusal, merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ovi_cli.errors import OviError
from ovi_stats import index as nn_index
from ovi_stats.store import (
    FORMAT_VERSION,
    StatsStore,
    list_stores,
    merge_stores,
    open_store,
    open_store_for,
    ovi_home,
    stats_root,
    write_store,
)

ENC = {"source": "tiny/encoder", "fingerprint": "f00d"}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))


def _emb(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) + 0.5).astype(np.float32)


def _brute_force(x, q, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, 1), ids


def test_ovi_home_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("OVI_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ovi_home() == tmp_path / "xdg" / "ovi"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert ovi_home() == tmp_path / "h" / ".cache" / "ovi"
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "o"))
    assert stats_root() == tmp_path / "o" / "stats"


def test_write_and_open_format(tmp_path):
    x = _emb()
    files = [f"img{i}.png" for i in range(len(x))]
    store = write_store(tmp_path / "s", x, files, encoder=ENC, source_dir="/data/imgs",
                        skipped=[{"path": "bad.png", "reason": "corrupt"}])
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["embeddings.npy", "files.json", "index.faiss", "meta.json", "moments.safetensors",
                     "ovi-store.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    for key in ("format_version", "encoder", "dim", "count", "source_dir", "skipped", "created", "ovi_version",
                "index", "shrinkage"):
        assert key in meta, key
    assert meta["format_version"] == FORMAT_VERSION and meta["count"] == 60 and meta["dim"] == 16
    assert meta["encoder"] == ENC and meta["skipped"] == [{"path": "bad.png", "reason": "corrupt"}]
    t = load_file(str(tmp_path / "s" / "moments.safetensors"))
    assert set(t) >= {"count", "mean", "cov", "shrinkage", "precision_cholesky"}
    assert int(t["count"]) == 60 and t["cov"].dtype == torch.float64

    s = open_store(tmp_path / "s")
    assert (s.count, s.dim, s.files) == (60, 16, files)
    assert s.mean.dtype == torch.float64 and s.mean.shape == (16,)
    np.testing.assert_allclose(s.mean.numpy(), x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.cov.numpy(), np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)
    L = s.precision_cholesky
    assert torch.equal(L, torch.tril(L)) and 0.0 <= s.shrinkage <= 1.0
    assert s.embeddings.dtype == np.float16 and s.embeddings.shape == (60, 16)
    np.testing.assert_array_equal(s.embeddings, x.astype(np.float16))
    d = s.describe()
    assert d["count"] == 60 and d["dim"] == 16 and d["encoder"] == ENC and d["index"] == "flat"
    assert store.path == s.path


def test_flat_index_returns_exact_neighbours(tmp_path):
    x = _emb(n=200, seed=1)
    s = write_store(tmp_path / "s", x, [str(i) for i in range(200)], encoder=ENC)
    q = _emb(n=9, seed=2) * 3.0  # not normalised: the store normalises
    cos, ids = s.search(q, 5)
    assert cos.dtype == np.float32 and ids.dtype == np.int64 and cos.shape == (9, 5)
    ref_cos, ref_ids = _brute_force(s.embeddings.astype(np.float32), q, 5)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(cos, ref_cos, atol=1e-5)
    # an embedding's nearest neighbour is itself
    _, self_ids = s.search(x[:20], 1)
    np.testing.assert_array_equal(self_ids[:, 0], np.arange(20))
    # k larger than the store is capped
    assert s.search(x[:1], 10_000)[1].shape == (1, 200)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_self(tmp_path, kind):
    x = _emb(n=400, d=16, seed=3)
    s = write_store(tmp_path / kind, x, [str(i) for i in range(400)], encoder=ENC, index=kind)
    assert s.index_params["type"] == kind
    _, ids = s.search(x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).mean() >= 0.95


def test_auto_index_threshold():
    assert nn_index.resolve_kind("auto", nn_index.FLAT_MAX) == "flat"
    assert nn_index.resolve_kind("auto", nn_index.FLAT_MAX + 1) == "hnsw"
    with pytest.raises(ValueError):
        nn_index.resolve_kind("lsh", 10)


class _FakeEncoders:
    """Only what the store consults: fingerprint, dim and source (a real encoder in test_stats_build)."""

    def __init__(self, fingerprint="f00d", dim=16, source="tiny/encoder"):
        self._fp, self.embed_dim, self.source = fingerprint, dim, source

    def fingerprint(self):
        return self._fp


def test_named_stores_and_newest_for_encoder():
    root = stats_root()
    write_store(root / "old", _emb(seed=1), [str(i) for i in range(60)], encoder=ENC)
    write_store(root / "other", _emb(seed=2), [str(i) for i in range(60)],
                encoder={"source": "other/enc", "fingerprint": "beef"})
    write_store(root / "new", _emb(seed=3), [str(i) for i in range(60)], encoder=ENC)
    assert [s.name for s in list_stores()] == ["new", "other", "old"]
    assert open_store("old").name == "old"
    assert open_store_for(None, _FakeEncoders()).name == "new"
    assert open_store_for(None, _FakeEncoders("beef", source="other/enc")).name == "other"
    assert open_store_for("old", _FakeEncoders()).name == "old"


def test_no_store_names_build_stats():
    with pytest.raises(OviError, match="ovi build-stats"):
        open_store_for(None, _FakeEncoders())
    with pytest.raises(OviError, match="no statistics store 'missing'"):
        open_store("missing")


def test_encoder_mismatch_is_refused_naming_both():
    write_store(stats_root() / "s", _emb(), [str(i) for i in range(60)], encoder=ENC)
    with pytest.raises(OviError) as info:
        open_store_for("s", _FakeEncoders("cafe", source="some/other-encoder"))
    msg = str(info.value)
    assert "tiny/encoder" in msg and "f00d" in msg and "some/other-encoder" in msg and "cafe" in msg
    assert "\n" not in msg
    with pytest.raises(OviError, match="dim 16.*dim 32"):
        open_store_for("s", _FakeEncoders("f00d", dim=32))


def test_merge_equals_whole(tmp_path):
    x = _emb(n=90, seed=5)
    files = [f"{i}.png" for i in range(90)]
    whole = write_store(tmp_path / "whole", x, files, encoder=ENC)
    a = write_store(tmp_path / "a", x[:31], files[:31], encoder=ENC, skipped=[{"path": "x.png", "reason": "r"}])
    b = write_store(tmp_path / "b", x[31:], files[31:], encoder=ENC)
    m = merge_stores([a, b], tmp_path / "m")
    assert m.count == 90 and m.files == files and m.skipped == [{"path": "x.png", "reason": "r"}]
    np.testing.assert_array_equal(m.embeddings, whole.embeddings)
    torch.testing.assert_close(m.mean, whole.mean, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(m.cov, whole.cov, rtol=1e-12, atol=1e-13)
    assert m.shrinkage == pytest.approx(whole.shrinkage, rel=1e-10)
    torch.testing.assert_close(m.precision_cholesky, whole.precision_cholesky, rtol=1e-8, atol=1e-9)
    with pytest.raises(OviError, match="cannot merge"):
        other = write_store(tmp_path / "o", x, files, encoder={"source": "z", "fingerprint": "zz"})
        merge_stores([a, other], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_bad_inputs_write_nothing(tmp_path):
    with pytest.raises(OviError, match="file names"):
        write_store(tmp_path / "s", _emb(), ["a"], encoder=ENC)
    x = _emb()
    x[3, 2] = np.nan
    with pytest.raises(OviError, match="NaN"):
        write_store(tmp_path / "s", x, [str(i) for i in range(60)], encoder=ENC)
    with pytest.raises(OviError, match="at least 2"):
        write_store(tmp_path / "s", _emb(n=1), ["a"], encoder=ENC)
    assert list(tmp_path.iterdir()) == []


def test_newer_format_is_refused(tmp_path):
    write_store(tmp_path / "s", _emb(), [str(i) for i in range(60)], encoder=ENC)
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(OviError, match="format version"):
        StatsStore(tmp_path / "s")
