"""The streaming builder on tiny real CLIP towers: broken files, resume, shards, workers, from-embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file as save_np
from safetensors.torch import load_file

from ovi_cli.distributed import parse_shard
from ovi_cli.errors import OviError
from ovi_stats.build import (
    build_from_embeddings,
    build_stats,
    select_files,
    shard_slice,
    work_dir_for,
)
from ovi_stats.images import load_rgb
from ovi_stats.store import merge_stores, open_store, write_store
from tests.helpers.reliability import interrupt_when
from tests.test_stats_images import make_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    good, broken = make_zoo(root)
    return root, good, broken


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """23 small valid images and 2 broken ones (so batches of 4 see skips mid-build)."""
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(7)
    for i in range(23):
        Image.fromarray(rng.integers(0, 256, (24 + i, 40, 3), dtype=np.uint8)).save(root / f"im{i:02d}.png")
    (root / "im05b.png").write_bytes(b"")
    (root / "im17b.jpg").write_bytes(b"not a jpeg")
    return root


def _store_tensors(path):
    return load_file(str(path / "moments.safetensors"))


def _same_store(a, b):
    ta, tb = _store_tensors(a.path), _store_tensors(b.path)
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.files == b.files and a.skipped == b.skipped


def test_shard_helpers():
    assert parse_shard(None) is None and parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0", "1-2"):
        with pytest.raises(OviError):
            parse_shard(bad)
    blocks = [shard_slice(10, (i, 3)) for i in (1, 2, 3)]
    assert [(s.start, s.stop) for s in blocks] == [(0, 3), (3, 6), (6, 10)]
    assert select_files(list("abcdefg"), 5, (2, 2)) == list("cde")


def test_build_zoo_skips_and_reports_broken_files(zoo, encoders, tmp_path):
    root, good, broken = zoo
    res = build_stats(root, tmp_path / "s", encoders, batch_size=4, workers=0)
    s = res.store
    assert s.count == len(good) and s.files == good
    assert {k["path"] for k in s.skipped} == set(broken)
    for k in s.skipped:
        assert broken[k["path"]] in k["reason"]
    meta = json.loads((s.path / "meta.json").read_text())
    assert meta["skipped"] == s.skipped and meta["source_dir"] == str(root)
    assert meta["encoder"]["fingerprint"] == encoders.fingerprint() and meta["dim"] == encoders.embed_dim
    # the embeddings are the encoder's own, on the same decoded RGB images
    direct = encoders.encode_images([load_rgb(root / f) for f in good]).numpy().astype(np.float64)
    np.testing.assert_allclose(s.embeddings.astype(np.float64), direct, rtol=2e-3, atol=2e-3)  # float16 storage
    # moments equal numpy's on the same embeddings (accumulated from float32, before float16 storage)
    np.testing.assert_allclose(s.mean.numpy(), direct.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.cov.numpy(), np.cov(direct, rowvar=False), rtol=1e-4, atol=1e-6)
    assert not work_dir_for(s.path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_folder_without_valid_image_is_one_line_error_and_writes_nothing(tmp_path, encoders):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_text("text")
    with pytest.raises(OviError) as info:
        build_stats(src, tmp_path / "out" / "s", encoders, workers=0)
    assert "no valid image" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OviError, match="no images"):
        build_stats(empty, tmp_path / "out2", encoders, workers=0)
    assert not (tmp_path / "out2").exists()



def test_resume_after_interruption_equals_uninterrupted(many, encoders, tmp_path, monkeypatch):
    whole = build_stats(many, tmp_path / "whole", encoders, batch_size=4, workers=0).store

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_stats(many, out, encoders, batch_size=4, workers=0, checkpoint_seconds=0,
                    on_batch=interrupt_when(lambda b: b == 3))
    assert not out.exists() and work_dir_for(out).exists()  # no half-written store, only the work folder
    with pytest.raises(OviError, match="--resume"):
        build_stats(many, out, encoders, batch_size=4, workers=0)

    encoded = []
    real = encoders.encode_pixels
    monkeypatch.setattr(encoders, "encode_pixels", lambda px: encoded.append(len(px)) or real(px))
    res = build_stats(many, out, encoders, batch_size=4, workers=0, resume=True)
    assert res.resumed_from == 16 and res.processed == 25 - 16
    assert sum(encoded) == 25 - 16 - 1  # only the unfinished images (one of them broken) were encoded
    _same_store(res.store, whole)
    assert not work_dir_for(out).exists()


def test_interrupt_before_any_checkpoint_restarts_cleanly(many, encoders, tmp_path):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        build_stats(many, out, encoders, batch_size=4, workers=0, checkpoint_seconds=1e9,
                    on_batch=interrupt_when(lambda b: b == 4))
    res = build_stats(many, out, encoders, batch_size=4, workers=0, resume=True)
    assert res.resumed_from == 0
    whole = build_stats(many, tmp_path / "whole", encoders, batch_size=4, workers=0).store
    _same_store(res.store, whole)


def test_resume_with_another_encoder_is_refused(many, encoders, tmp_path, monkeypatch):
    out = tmp_path / "s"
    with pytest.raises(KeyboardInterrupt):
        build_stats(many, out, encoders, batch_size=4, workers=0, checkpoint_seconds=0,
                    on_batch=interrupt_when(lambda b: b == 0))
    monkeypatch.setattr(encoders, "_fingerprint", "0123456789abcdef")
    with pytest.raises(OviError, match="0123456789abcdef"):
        build_stats(many, out, encoders, batch_size=4, workers=0, resume=True)


def test_shards_merged_equal_whole(many, encoders, tmp_path):
    whole = build_stats(many, tmp_path / "whole", encoders, batch_size=5, workers=0).store
    parts = [build_stats(many, tmp_path / f"p{i}", encoders, batch_size=5, workers=0, shard=(i, 3)).store
             for i in (1, 2, 3)]
    assert sum(p.count for p in parts) == whole.count
    merged = merge_stores(parts, tmp_path / "merged")
    assert merged.files == whole.files and merged.skipped == whole.skipped
    np.testing.assert_array_equal(merged.embeddings, whole.embeddings)
    torch.testing.assert_close(merged.mean, whole.mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(merged.cov, whole.cov, rtol=1e-5, atol=1e-7)


def test_worker_processes_give_the_same_store(many, encoders, tmp_path):
    a = build_stats(many, tmp_path / "a", encoders, batch_size=8, workers=0).store
    b = build_stats(many, tmp_path / "b", encoders, batch_size=8, workers=2).store
    _same_store(a, b)


def test_limit_and_force(many, encoders, tmp_path):
    s = build_stats(many, tmp_path / "s", encoders, batch_size=8, workers=0, limit=7).store
    assert s.files == [f"im0{i}.png" for i in range(6)]  # the 7th file, im05b.png, is broken
    assert s.skipped == [{"path": "im05b.png", "reason": "empty file (0 bytes)"}]
    with pytest.raises(OviError, match="--force"):
        build_stats(many, tmp_path / "s", encoders, workers=0, limit=3)
    s = build_stats(many, tmp_path / "s", encoders, workers=0, limit=3, force=True).store
    assert s.count == 3


def test_from_embeddings_equals_write_store(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    np.save(tmp_path / "a.npy", x[:20])
    save_np({"image_embeds": x[20:]}, str(tmp_path / "b.safetensors"))
    (tmp_path / "names.txt").write_text("\n".join(f"n{i}" for i in range(50)) + "\n")
    enc = {"source": "tiny", "fingerprint": "ff"}
    s = build_from_embeddings([tmp_path / "a.npy", tmp_path / "b.safetensors"], tmp_path / "s", enc, dim=16,
                              file_list=tmp_path / "names.txt", chunk=7)
    ref = write_store(tmp_path / "ref", x, [f"n{i}" for i in range(50)], encoder=enc)
    assert s.files == ref.files
    np.testing.assert_array_equal(s.embeddings, ref.embeddings)
    torch.testing.assert_close(s.cov, ref.cov, rtol=1e-12, atol=1e-12)
    default = build_from_embeddings([tmp_path / "a.npy"], tmp_path / "d", enc)
    assert default.files[:2] == ["a.npy#0", "a.npy#1"]
    with pytest.raises(OviError, match="16-d.*32-d"):
        build_from_embeddings([tmp_path / "a.npy"], tmp_path / "e", enc, dim=32)
    with pytest.raises(OviError, match="2 names for 20"):
        (tmp_path / "two.txt").write_text("x\ny\n")
        build_from_embeddings([tmp_path / "a.npy"], tmp_path / "e", enc, file_list=tmp_path / "two.txt")
    assert not (tmp_path / "e").exists()


def test_store_built_with_one_encoder_is_refused_by_another(many, encoders, tmp_path):
    from ovi_cli.encoders import Encoders
    from ovi_stats.store import open_store_for
    from tests.helpers import tiny_models

    build_stats(many, tmp_path / "s", encoders, batch_size=8, workers=0, limit=8)
    other = Encoders.load(str(tiny_models.make_encoder_repo(tmp_path / "other", seed=1)), device="cpu")
    assert other.fingerprint() != encoders.fingerprint()
    with pytest.raises(OviError) as info:
        open_store_for(str(tmp_path / "s"), other)
    msg = str(info.value)
    assert encoders.fingerprint() in msg and other.fingerprint() in msg and str(tmp_path / "other") in msg
    assert open_store(tmp_path / "s").count == 7


def test_write_failure_is_one_line_and_resumable(many, encoders, tmp_path):
    def disk_full(b):
        if b == 2:
            raise OSError(28, "No space left on device")

    out = tmp_path / "s"
    with pytest.raises(OviError) as info:
        build_stats(many, out, encoders, batch_size=4, workers=0, checkpoint_seconds=0, on_batch=disk_full)
    assert "No space left on device" in str(info.value) and "--resume" in str(info.value)
    assert not out.exists()
    res = build_stats(many, out, encoders, batch_size=4, workers=0, resume=True)
    assert res.resumed_from == 12 and res.store.count == 23
