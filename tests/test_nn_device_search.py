"""Exact NN search by matmul on a torch device: the same neighbours as faiss flat, chosen automatically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovi_plugins.constraints import choose_search
from ovi_stats.index import build_index, search
from ovi_stats.matmul_search import MatmulSearch, fits, search_bytes


def _data(n=3000, dim=48, queries=9, seed=0):
    rng = np.random.default_rng(seed)
    emb = (rng.standard_normal((n, dim)) * rng.uniform(0.5, 3.0, (n, 1))).astype(np.float16)  # raw, varied norms
    q = rng.standard_normal((queries, dim)).astype(np.float32) * 7.0
    return emb, q


def _faiss_flat(emb):
    index, _ = build_index(lambda: iter([emb]), len(emb), emb.shape[1], kind="flat")
    return index


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("chunk_rows", [1 << 18, 700])  # one block, and blocks merged
def test_same_ids_as_faiss_flat(k, chunk_rows):
    emb, q = _data()
    ref_cos, ref_ids = search(_faiss_flat(emb), q, k)
    ms = MatmulSearch.from_chunks(iter([emb[:1000], emb[1000:]]), len(emb), emb.shape[1], "cpu",
                                  chunk_rows=chunk_rows)
    cos, ids = ms.search(torch.from_numpy(q), k)
    assert ids.dtype == torch.int64 and cos.dtype == torch.float32
    # distinct similarities (random data): the ids are exactly faiss's, in the same order
    gaps = np.diff(-ref_cos, axis=1)
    assert (gaps > 1e-5).all() if k > 1 else True
    assert ids.numpy().tolist() == ref_ids.tolist()
    np.testing.assert_allclose(cos.numpy(), ref_cos, atol=1e-5)
    vec = ms.vectors(ids)
    assert vec.shape == (len(q), k, emb.shape[1])
    expected = emb[ref_ids.reshape(-1)].astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vec.reshape(-1, emb.shape[1]).numpy(), expected, atol=1e-6)


def test_k_is_capped_and_queries_are_not_modified():
    emb, q = _data(n=4)
    ms = MatmulSearch.from_chunks(iter([emb]), 4, emb.shape[1], "cpu")
    qt = torch.from_numpy(q.copy())
    _, ids = ms.search(qt, 10)
    assert ids.shape == (len(q), 4) and torch.equal(qt, torch.from_numpy(q))


def test_budget():
    assert search_bytes(118_287, 1280) == 605_629_440  # COCO train2017 with Kandinsky's CLIP: 0.6 GB
    assert fits(118_287, 1280, free=80 * 2**30)
    assert not fits(118_287, 1280, free=2 * 2**30)  # 0.6 GB > 25% of 2 GiB
    assert not fits(10, 10, free=None)  # unknown free memory: faiss


def test_choose_search_rules():
    assert choose_search("auto", "cuda", "hnsw", fits=True) == "device-matmul"  # exact beats HNSW on a GPU
    assert choose_search("auto", "cuda", "flat", fits=False) == "faiss-flat"
    assert choose_search("auto", "cpu", "flat", fits=True) == "device-matmul"  # same ids, faster
    assert choose_search("auto", "cpu", "hnsw", fits=True) == "faiss-hnsw"  # approximate stays on a CPU
    assert choose_search("matmul", "cpu", "hnsw", fits=True) == "device-matmul"
    assert choose_search("faiss", "cuda", "flat", fits=True) == "faiss-flat"
    from ovi_cli.errors import OviError

    with pytest.raises(OviError, match="nn.search"):
        choose_search("gpu", "cpu", "flat", fits=True)


@pytest.fixture(scope="module")
def rand_store(tmp_path_factory, encoders):
    from ovi_stats.store import write_store

    rng = np.random.default_rng(5)
    emb = rng.standard_normal((400, encoders.embed_dim)).astype(np.float32)
    path = tmp_path_factory.mktemp("stats") / "rand"
    files = [f"f{i}" for i in range(400)]
    return write_store(path, emb, files, encoder={"source": "test", "fingerprint": "none"}, index="flat")


def _nn(store, encoders, device="cpu", **options):
    from ovi_cli.api import ConstraintContext
    from ovi_plugins.constraints import NearestNeighborConstraint

    ctx = ConstraintContext(encoders=encoders, device=torch.device(device), dtype=torch.float32, store=store,
                            options={"k": 3, **options}, weight=0.5)
    return NearestNeighborConstraint(ctx)


def test_constraint_terms_and_neighbours_equal_on_both_paths(rand_store, encoders):
    dev, ref = _nn(rand_store, encoders), _nn(rand_store, encoders, search="faiss")
    assert dev.search_kind == "device-matmul" and ref.search_kind == "faiss-flat"
    e = torch.randn(5, encoders.embed_dim, generator=torch.Generator().manual_seed(1), requires_grad=True)
    for step in range(3):
        a, b = dev.term(e, step, torch.arange(5)), ref.term(e, step, torch.arange(5))
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    ra, rb = dev.report(e.detach()), ref.report(e.detach())
    assert [[h["id"] for h in r["neighbours"]] for r in ra] == [[h["id"] for h in r["neighbours"]] for r in rb]
    assert ra[0]["search"] == "device-matmul" and rb[0]["search"] == "faiss-flat"
    assert [r["searches"] for r in ra] == [3] * 5


def test_forcing_matmul_beyond_the_budget_is_a_one_line_error(rand_store, encoders, monkeypatch):
    from ovi_cli.errors import OviError
    from ovi_stats import matmul_search

    monkeypatch.setattr(matmul_search, "free_bytes", lambda device: 1000)
    assert _nn(rand_store, encoders).search_kind == "faiss-flat"
    with pytest.raises(OviError, match="do not fit"):
        _nn(rand_store, encoders, search="matmul")


# ---- CUDA: the same on a GPU, and no host round trip per step ------------------------------------
# (no faiss needed: a GPU machine may not have faiss-cpu; the CPU tests above compare with faiss)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _brute_force(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    e = emb.astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    qq = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qq @ e.T), axis=1, kind="stable")[:, :k]


class _MemStore:
    """The parts of a StatsStore the nn constraint reads, in memory (flat index, brute-force search)."""

    def __init__(self, emb: np.ndarray) -> None:
        self.embeddings, self.count, self.dim = emb, len(emb), emb.shape[1]
        self.files = [f"f{i}" for i in range(len(emb))]
        self.index_params = {"type": "flat"}

    def iter_embeddings(self, chunk: int = 8192):
        for i in range(0, self.count, chunk):
            yield np.asarray(self.embeddings[i : i + chunk])

    def search(self, queries, k):
        ids = _brute_force(self.embeddings, np.asarray(queries), k)
        return np.zeros(ids.shape, np.float32), ids


@cuda
def test_cuda_matmul_search_gives_the_exact_neighbours():
    emb, q = _data(n=20_000, dim=64, queries=8)
    ms = MatmulSearch.from_chunks(iter([emb]), len(emb), emb.shape[1], "cuda")
    cos, ids = ms.search(torch.from_numpy(q).cuda(), 4)
    assert ids.is_cuda and cos.is_cuda
    assert ids.cpu().numpy().tolist() == _brute_force(emb, q, 4).tolist()
    cpu = MatmulSearch.from_chunks(iter([emb]), len(emb), emb.shape[1], "cpu")
    np.testing.assert_allclose(cos.cpu().numpy(), cpu.search(torch.from_numpy(q), 4)[0].numpy(), atol=1e-5)


@cuda
def test_cuda_nn_constraint_makes_no_host_sync_per_step(encoders):
    """CUDA's sync debug mode warns on each device-to-host sync: their count must not grow with steps."""
    import warnings

    from ovi_cli.engine import OviSettings, optimize
    from ovi_cli.pseudo_tokens import encode_pseudo_tokens

    store = _MemStore(np.random.default_rng(5).standard_normal((400, encoders.embed_dim)).astype(np.float16))
    model = encoders.image_encoder.to("cuda")
    try:
        nn = _nn(store, encoders, device="cuda")
        assert nn.search_kind == "device-matmul"
        targets = torch.randn(3, encoders.embed_dim, device="cuda")

        def syncs(steps: int, schedule: str) -> int:
            settings = OviSettings(tokens=2, steps=steps, sync_every=1000, schedule=schedule)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    optimize(lambda t: encode_pseudo_tokens(model, t), targets, token_width=encoders.token_width,
                             seeds=[1, 2, 3], settings=settings, constraints=[nn], device="cuda")
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            return sum("synchroniz" in str(w.message).lower() for w in caught)

        syncs(2, "paper")
        for schedule in ("paper", "fast"):
            assert syncs(10, schedule) == syncs(40, schedule), schedule
    finally:
        encoders.image_encoder.to("cpu")
