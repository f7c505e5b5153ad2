"""Statistics at web scale: webdataset shards, clip-retrieval folders, compressed indexes, the source seam."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_cli.errors import OviError
from ovi_stats import index as nn_index
from ovi_stats.build import build_from_source_embeddings, build_stats
from ovi_stats.sources import ImageSource, SourceSample
from ovi_stats.store import merge_stores, open_store, write_store
from tests.helpers.reliability import interrupt_when, one_line_error

pytest.importorskip("webdataset")
pytest.importorskip("pyarrow")


def _jpeg(rng, i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20 + i % 7, 28, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """3 img2dataset shards of 5 samples (KEY.jpg, KEY.txt, KEY.json) and the same 15 images in a folder."""
    root = tmp_path_factory.mktemp("web")
    (root / "shards").mkdir()
    (root / "folder").mkdir()
    rng = np.random.default_rng(5)
    for s in range(3):
        with tarfile.open(root / "shards" / f"{s:05d}.tar", "w") as tar:
            for j in range(5):
                key = f"{s:05d}{j:04d}"
                data = _jpeg(rng, 5 * s + j)
                _add(tar, f"{key}.jpg", data)
                _add(tar, f"{key}.txt", f"a photo number {key}".encode())
                _add(tar, f"{key}.json", json.dumps({"url": f"https://example.com/{key}.jpg", "key": key}).encode())
                (root / "folder" / f"{key}.jpg").write_bytes(data)
    return root


def _close(a, b, tol=1e-9):
    ma, mb = a.moments(), b.moments()
    assert ma.n == mb.n
    np.testing.assert_allclose(ma.mean, mb.mean, rtol=0, atol=tol)
    np.testing.assert_allclose(ma.m2, mb.m2, rtol=0, atol=tol)
    np.testing.assert_allclose(np.asarray(a.cov), np.asarray(b.cov), rtol=0, atol=tol)


# ---- webdataset ---------------------------------------------------------------------------------
def _wds(spec):
    from ovi_plugins.sources import WebdatasetSource

    return WebdatasetSource(str(spec))


def test_webdataset_gives_the_same_store_as_the_folder(web, encoders, tmp_path):
    folder = build_stats(web / "folder", tmp_path / "folder", encoders, batch_size=4, workers=0).store
    src = _wds(str(web / "shards" / "{00000..00002}.tar"))
    res = build_stats(src, tmp_path / "wds", encoders, batch_size=4, workers=0)
    shards = res.store
    assert shards.count == folder.count == 15 and res.skipped == []
    _close(shards, folder)
    assert shards.files[0] == "00000.tar/000000000"
    meta = shards.row_metadata([0, 14])
    assert meta[0] == {"key": "000000000", "shard": "00000.tar", "url": "https://example.com/000000000.jpg",
                       "caption": "a photo number 000000000"}
    assert meta[1]["key"] == "000020004"
    # a folder of tars and a list of tars name the same shards
    assert _wds(web / "shards").units() == src.units() == _wds(
        "::".join(str(web / "shards" / f"{s:05d}.tar") for s in range(3))).units()
    # workers give the same store (the batch partition does not depend on them)
    two = build_stats(src, tmp_path / "w2", encoders, batch_size=4, workers=2).store
    assert np.array_equal(np.asarray(two.embeddings), np.asarray(shards.embeddings)) and two.files == shards.files


def test_webdataset_damaged_tar_and_sample_without_image_are_skipped_and_counted(web, encoders, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for s in range(3):
        (bad / f"{s:05d}.tar").write_bytes((web / "shards" / f"{s:05d}.tar").read_bytes())
    with tarfile.open(bad / "00003.tar", "w") as tar:  # a sample with a caption and no image
        _add(tar, "x1.txt", b"caption only")
        _add(tar, "x2.jpg", _jpeg(np.random.default_rng(1), 3))
    data = (web / "shards" / "00001.tar").read_bytes()
    (bad / "00004.tar").write_bytes(data[: len(data) // 2 + 100])  # truncated mid-member (a cut download)
    (bad / "00005.tar").write_bytes(b"this is no tar at all" * 40)
    res = build_stats(_wds(bad), tmp_path / "s", encoders, batch_size=4, workers=0)
    reasons = [s["reason"] for s in res.skipped]
    assert "no image in the sample" in reasons
    assert sum(r.startswith("damaged tar") for r in reasons) == 2, res.skipped
    assert res.store.count == 15 + 1 + sum(1 for f in res.store.files if f.startswith("00004.tar/"))
    assert len(res.store.skipped) == len(res.skipped) == 3


@pytest.mark.parametrize("n", [3, 2, 5])  # 3: a tar a shard; 2: blocks of tars; 5 > 3 tars: every 5th sample
def test_webdataset_shards_merged_equal_the_whole(web, encoders, tmp_path, n):
    spec = str(web / "shards" / "{00000..00002}.tar")
    whole = build_stats(_wds(spec), tmp_path / "whole", encoders, batch_size=3, workers=0).store
    parts = [build_stats(_wds(spec), tmp_path / f"p{i}", encoders, batch_size=3, workers=0, shard=(i, n)).store
             for i in range(1, n + 1)]
    assert sum(p.count for p in parts) == 15
    merged = merge_stores(parts, tmp_path / "merged", index="flat")
    # the moments merge exactly (float64 sums); the rows differ only by the float32 encoder's batch
    # composition (a share's batches hold other images than the whole build's): ~1e-8
    _close(merged, whole, tol=1e-6)
    assert sorted(merged.files) == sorted(whole.files)
    assert merged.row_metadata([0])[0]["key"] == merged.files[0].split("/")[1]


def test_webdataset_resume_equals_uninterrupted(web, encoders, tmp_path):
    spec = str(web / "shards" / "{00000..00002}.tar")
    whole = build_stats(_wds(spec), tmp_path / "whole", encoders, batch_size=4, workers=0).store
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        build_stats(_wds(spec), out, encoders, batch_size=4, workers=0, checkpoint_seconds=0,
                    on_batch=interrupt_when(lambda b: b == 1))
    with pytest.raises(OviError, match="other settings: --batch-size 4 \\(now 3\\)"):
        build_stats(_wds(spec), out, encoders, batch_size=3, workers=0, resume=True)
    res = build_stats(_wds(spec), out, encoders, workers=0, resume=True)
    assert res.resumed_from == 8
    assert np.array_equal(np.asarray(res.store.embeddings), np.asarray(whole.embeddings))
    assert res.store.files == whole.files


def test_build_stats_cli_reads_a_brace_pattern(web, encoder_repo, run_cli, tmp_path):
    res = run_cli("build-stats", str(web / "shards" / "{00000..00001}.tar"), "--encoder-model", encoder_repo,
                  "--workers", "0", "--out", tmp_path / "s", "--json")
    assert res.code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["count"] == 10 and info["index"] == "flat" and info["recall_at_10"] is not None
    # --source forces one: the shards are no image folder
    one_line_error(run_cli("build-stats", web / "shards", "--source", "folder", "--encoder-model", encoder_repo,
                           "--out", tmp_path / "f"), "no images")


def test_torchrun_splits_webdataset_shards(web, encoder_repo, run_cli, tmp_path):
    from tests.test_distributed import _torchrun

    args = ["build-stats", web / "shards", "--encoder-model", encoder_repo, "--batch-size", "2", "--workers", "0"]
    assert run_cli(*args, "--quiet", "--out", tmp_path / "one").code == 0
    _torchrun(*args, "--out", tmp_path / "two", tmp_path=tmp_path)
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two")
    assert [m["count"] for m in two.meta["merged_from"]] == [5, 10]  # rank 0: 1 tar of 3, rank 1: 2
    _close(two, one, tol=1e-6)  # rank 0's last batch holds 1 image, the whole build's 2: float32 encoder noise
    assert two.files == one.files


def test_a_missing_extra_is_one_line_naming_it(web, encoder_repo, run_cli, tmp_path, monkeypatch):
    cr = _clip_retrieval(tmp_path / "cr", [4, 3], dim=16)
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import webdataset -> ImportError
    one_line_error(run_cli("build-stats", str(web / "shards" / "{00000..00001}.tar"), "--encoder-model",
                           encoder_repo, "--out", tmp_path / "s"), "ovi[scale]")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    one_line_error(run_cli("build-stats", cr, "--from-embeddings", "--encoder-model", encoder_repo,
                           "--out", tmp_path / "c"), "ovi[scale]")


# ---- clip-retrieval -------------------------------------------------------------------------------
def _clip_retrieval(root: Path, sizes: list[int], dim: int, numbers: list[int] | None = None, seed: int = 0):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    rng = np.random.default_rng(seed)
    for n, size in zip(numbers or range(len(sizes)), sizes):
        emb = rng.standard_normal((size, dim)).astype(np.float16)
        emb[:, 0] = n  # the file's number, to check the row order
        np.save(root / "img_emb" / f"img_emb_{n}.npy", emb)
        table = pa.table({"image_path": [f"s{n}/{i:03d}.jpg" for i in range(size)],
                          "caption": [f"caption {n}-{i}" for i in range(size)],
                          "url": [f"https://x/{n}/{i}" for i in range(size)]})
        pq.write_table(table, root / "metadata" / f"metadata_{n}.parquet", row_group_size=3)
    return root


def test_clip_retrieval_rows_stay_aligned_in_numeric_order(tmp_path):
    from ovi_plugins.sources import ClipRetrievalSource

    root = _clip_retrieval(tmp_path / "cr", [5, 7, 4], dim=8, numbers=[10, 2, 1])  # "10" < "2" as strings
    src = ClipRetrievalSource(str(root))
    src.check()
    assert src.embedding_dim() == 8 and src.embedding_count() == 16
    store = build_from_source_embeddings(src, tmp_path / "s", {"source": "e", "fingerprint": "f"}, dim=8,
                                         index="flat", chunk=4)
    emb = np.asarray(store.embeddings, np.float32)
    assert emb[:, 0].tolist() == [1] * 4 + [2] * 7 + [10] * 5  # img_emb_1, _2, _10
    assert store.files[:2] == ["s1/000.jpg", "s1/001.jpg"] and store.files[4] == "s2/000.jpg"
    assert store.row_metadata([15]) == [{"key": "s10/004.jpg", "image_path": "s10/004.jpg",
                                         "caption": "caption 10-4", "url": "https://x/10/4"}]
    # moments in float64 equal numpy's on the float16 rows
    ref = np.concatenate([np.load(root / "img_emb" / f"img_emb_{n}.npy").astype(np.float64) for n in (1, 2, 10)])
    np.testing.assert_allclose(store.moments().mean, ref.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(store.cov), np.cov(ref.T), rtol=0, atol=1e-10)


def test_clip_retrieval_dimension_is_checked_before_reading(tmp_path, monkeypatch):
    from ovi_plugins.sources import ClipRetrievalSource

    src = ClipRetrievalSource(str(_clip_retrieval(tmp_path / "cr", [5], dim=8)))
    monkeypatch.setattr(ClipRetrievalSource, "embedding_chunks", lambda *a: pytest.fail("read before the check"))
    with pytest.raises(OviError, match="8-d but encoder 'e' gives 16-d"):
        build_from_source_embeddings(src, tmp_path / "s", {"source": "e", "fingerprint": "f"}, dim=16)


def test_clip_retrieval_misaligned_metadata_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ovi_plugins.sources import ClipRetrievalSource

    root = _clip_retrieval(tmp_path / "cr", [5, 4], dim=8)
    pq.write_table(pa.table({"caption": ["a", "b"]}), root / "metadata" / "metadata_1.parquet")
    with pytest.raises(OviError, match="has 2 rows but .*holds 4 embeddings"):
        ClipRetrievalSource(str(root)).check()


def test_clip_retrieval_cli(tmp_path, encoder_repo, run_cli):
    root = _clip_retrieval(tmp_path / "cr", [6, 5], dim=16, numbers=[0, 1])
    res = run_cli("build-stats", root, "--from-embeddings", "--encoder-model", encoder_repo, "--json",
                  "--out", tmp_path / "s")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["count"] == 11
    one_line_error(run_cli("build-stats", _clip_retrieval(tmp_path / "wide", [3], dim=32), "--from-embeddings",
                           "--encoder-model", encoder_repo, "--out", tmp_path / "w"), "32-d", "16-d")
    one_line_error(run_cli("build-stats", root, "--encoder-model", encoder_repo, "--out", tmp_path / "x"),
                   "add --from-embeddings")


# ---- compressed indexes -------------------------------------------------------------------------
def test_auto_follows_the_documented_rules():
    gb = 1024**3
    assert nn_index.choose_kind(100_000, 1280, 4 * gb) == "flat"
    assert nn_index.choose_kind(100_000, 1280, 100 * 1024**2) == "opq"  # 512 MB of flat, IVF or HNSW: none fit
    assert nn_index.choose_kind(100_001, 1280, 4 * gb) == "hnsw"
    assert nn_index.choose_kind(5_000, 1280, 10 * 1024**2) == "hnsw"  # too few rows to train PQ
    assert nn_index.choose_kind(1_000_000, 1280, 8 * gb) == "hnsw"  # M = floor((2147 - 1280) / 2) = 433
    assert nn_index.hnsw_links(1_000_000, 1280, 8 * gb) == 433
    assert nn_index.choose_kind(1_000_000, 1280, 4 * gb) == "opq"  # HNSW M < 8, IVF-Flat only below 1M
    assert nn_index.choose_kind(500_000, 1280, 2_580_000_000) == "ivf"  # HNSW needs M >= 8: 2.592 GB; IVF 2.566
    assert nn_index.choose_kind(400_000_000, 1280, 64 * gb) == "opq"
    assert nn_index.pq_code(400_000_000, 1280, 64 * gb) == 128  # (128 + 8) * 400M = 54.4 GB <= 64 GiB
    assert nn_index.pq_code(400_000_000, 1280, 16 * gb) == 32
    assert nn_index.ivf_lists(1_000_000) == 4096 and nn_index.ivf_lists(100_000) == 1024
    assert nn_index.opq_width(1280, 128) == 896 and nn_index.opq_width(1280, 32) == 224
    assert nn_index.parse_memory("4GB") == 4 * gb and nn_index.parse_memory("512 MiB") == 512 * 1024**2
    with pytest.raises(ValueError):
        nn_index.parse_memory("lots")
    with pytest.raises(ValueError, match="raise --index-memory"):
        nn_index.pq_code(10**9, 1280, 1024**3)


def test_help_states_the_real_thresholds(run_cli):
    text = " ".join(run_cli("build-stats", "--help").stdout.split())
    for number in (nn_index.FLAT_MAX, nn_index.QUANTIZATION_MIN, nn_index.IVF_FLAT_MAX):
        assert f"{number:,}" in text
    assert f">= {nn_index.HNSW_M_MIN}" in text and "--index-memory" in text


def _clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim))
    return (centres[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("kind", ["ivfpq", pytest.param("opq", marks=pytest.mark.slow)])  # PQ training: ~1 min
def test_compressed_index_reranks_exactly_and_reports_recall(tmp_path, kind, run_cli):
    x = _clustered(12_000, 32)
    store = write_store(tmp_path / kind, x, [f"r{i}" for i in range(len(x))],
                        encoder={"source": "e", "fingerprint": "f"}, index=kind, index_memory=200_000)
    p = store.index_params
    # 16-byte codes need 288 kB > 200 kB; 12000 / 39 lists
    assert p["type"] == kind and p["pq"] == 8 and p["nlist"] == 307
    assert store.compressed
    q = _clustered(20, 32, seed=9)
    cos, ids = store.search(q, 5)
    exact_cos, exact_ids = nn_index.exact_top(q, iter([np.asarray(store.embeddings, np.float32)]), 5)
    # the cosines returned are exact (recomputed from the stored rows), and the re-ranked ids match exact search
    vec = nn_index.l2_normalise(np.asarray(store.embeddings[ids.reshape(-1)], np.float32)).reshape(20, 5, -1)
    np.testing.assert_allclose(cos, np.einsum("bkd,bd->bk", vec, nn_index.l2_normalise(q)), atol=1e-5)
    assert nn_index.recall_at(ids, exact_ids) >= 0.95
    np.testing.assert_allclose(cos[:, 0], exact_cos[:, 0], atol=1e-3)
    info = json.loads(run_cli("stats", "info", store.path, "--json").stdout)
    assert info["index"] == kind and info["index_bytes"] > 0 and info["recall_at_10"] >= 0.9
    text = run_cli("stats", "info", store.path).stdout
    assert f"index        {kind}" in text and "recall@10" in text
    # opened memory-mapped (IO_FLAG_MMAP): the inverted lists are not read into memory
    import faiss

    reopened = open_store(store.path)
    ivf = faiss.extract_index_ivf(reopened.index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    assert type(lists).__name__ == "OnDiskInvertedLists"


def test_ivfpq_skips_polysemous_training():
    import faiss

    index = faiss.index_factory(32, "OPQ8_32,IVF64,PQ8x8", faiss.METRIC_INNER_PRODUCT)
    assert faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training  # faiss's default
    nn_index.skip_polysemous_training(index)
    assert not faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training
    nn_index.skip_polysemous_training(faiss.IndexFlatIP(8))  # no IVF inside: nothing to do


def test_compressed_index_needs_enough_rows(tmp_path):
    with pytest.raises(OviError, match="at least 10000 embeddings"):
        write_store(tmp_path / "s", _clustered(500, 8), [str(i) for i in range(500)],
                    encoder={"source": "e", "fingerprint": "f"}, index="ivfpq")


# ---- merging stores built apart -------------------------------------------------------------------
def test_three_stores_merge_exactly(tmp_path, run_cli):
    enc = {"source": "e", "fingerprint": "f"}
    parts = [_clustered(n, 12, seed=s) for n, s in ((50, 1), (31, 2), (77, 3))]
    for i, x in enumerate(parts):
        write_store(tmp_path / f"m{i}", x, [f"m{i}/{j}" for j in range(len(x))], encoder=enc, index="flat")
    res = run_cli("stats", "merge", *(tmp_path / f"m{i}" for i in range(3)), "--out", tmp_path / "all",
                  "--index", "hnsw", "--json")
    assert res.code == 0, res.stderr
    merged = open_store(tmp_path / "all")
    whole = np.concatenate(parts).astype(np.float64)  # write_store takes the moments of the rows given
    assert merged.count == 158 and merged.index_params["type"] == "hnsw"
    np.testing.assert_allclose(merged.moments().mean, whole.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(merged.cov), np.cov(whole.T), rtol=0, atol=1e-11)
    assert merged.files[50] == "m1/0"


# ---- the seam: a third-party source plugin ---------------------------------------------------------
class _Gradients(ImageSource):
    """A test source: `gradients:N` is N generated PNG images in units of 3, no files on disk."""

    name = "gradients"
    priority = 5

    @classmethod
    def claims(cls, spec):
        return spec.startswith("gradients:")

    def root(self):
        return str(Path(self.options.get("root", ".")).absolute())

    def units(self):
        n = int(self.spec.split(":")[1])
        return [f"u{u}" for u in range(-(-n // 3))]

    def samples(self, unit, skip=0):
        u, n = int(unit[1:]), int(self.spec.split(":")[1])
        for j in range(skip, min(3, n - 3 * u)):
            i = 3 * u + j
            buf = io.BytesIO()
            Image.fromarray(np.full((16, 16, 3), (i * 37) % 256, dtype=np.uint8)).save(buf, format="PNG")
            yield SourceSample(key=f"g{i}", image=buf.getvalue(), metadata={"shade": (i * 37) % 256})


def test_a_third_party_source_plugin_builds_a_store(encoder_repo, run_cli, tmp_path):
    from ovi_cli import hookimpl
    from ovi_cli.plugins import load_registry, set_registry

    module = types.ModuleType("gradient_source")
    module.register_image_sources = hookimpl(lambda register: register(_Gradients))
    set_registry(load_registry(extra=[("gradients", module)]))
    try:
        res = run_cli("build-stats", "gradients:7", "--encoder-model", encoder_repo, "--workers", "0",
                      "--out", tmp_path / "g", "--json")
        assert res.code == 0, res.stderr
        store = open_store(tmp_path / "g")
        assert store.count == 7 and store.files == [f"g{i}" for i in range(7)]
        assert "gradients" in run_cli("plugins").stdout
    finally:
        set_registry(None)
