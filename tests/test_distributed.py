"""Many processes: torchrun's environment, shares, devices, and 2 processes (gloo, CPU) == 1 process.

The torchrun tests start `python -m torch.distributed.run --standalone --nproc-per-node 2` on tiny
models, and compare with the same command in one process: the bytes of every image and embedding
file (bench generate, gen --prompts), the store's embeddings and moments (build-stats).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovi_cli.distributed import Launch, Share, device_for, launch_from_env, work_share
from ovi_cli.errors import OviError

TORCHRUN_TIMEOUT_S = 600


# ---- pure ------------------------------------------------------------------------------------
def test_launch_from_torchrun_environment():
    assert launch_from_env({}) == Launch(0, 1, 0, launched=False)
    env = {"RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}
    assert launch_from_env(env) == Launch(5, 16, 1, launched=True)
    assert launch_from_env({"WORLD_SIZE": "1"}) == Launch(0, 1, 0, launched=True)
    with pytest.raises(OviError, match="RANK=4, WORLD_SIZE=2"):
        launch_from_env({"RANK": "4", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(OviError, match="WORLD_SIZE='two'"):
        launch_from_env({"WORLD_SIZE": "two"})


def test_shards_split_again_among_ranks():
    assert work_share(None, Launch()) == Share(0, 1)
    assert work_share((2, 4), Launch()) == Share(1, 4)
    assert work_share(None, Launch(3, 8, 3, True)) == Share(3, 8)
    # SLURM array job 2 of 3, each job torchrun with 8 ranks: rank 5 is share 13 of 24
    assert work_share((2, 3), Launch(5, 8, 5, True)) == Share(13, 24)
    shares = [work_share((i, 3), Launch(r, 8, r, True)) for i in (1, 2, 3) for r in range(8)]
    assert sorted(s.index for s in shares) == list(range(24)) and {s.count for s in shares} == {24}
    assert Share(13, 24).label == "part-00014-of-00024"


def test_device_per_local_rank():
    torchrun = Launch(9, 16, 1, launched=True)
    assert device_for("auto", torchrun, 8) == "cuda:1"
    assert device_for("cuda", torchrun, 8) == "cuda:1"
    assert device_for("auto", torchrun, 1) == "cuda:0"  # one visible GPU per process (SLURM --gpus-per-task)
    assert device_for("auto", torchrun, 0) == "auto"  # no CUDA: the CPU (gloo)
    assert device_for("cpu", torchrun, 8) == "cpu"
    assert device_for("auto", Launch(), 8) == "auto"  # one process: as given
    assert device_for("cuda:3", Launch(0, 1, 0, True), 8) == "cuda:3"
    with pytest.raises(OviError, match="cuda:LOCAL_RANK"):
        device_for("cuda:3", torchrun, 8)
    with pytest.raises(OviError, match="only 2 GPUs"):
        device_for("auto", Launch(3, 4, 3, True), 2)


# ---- torchrun, 2 processes on the CPU --------------------------------------------------------
def _torchrun(*args, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OVI_HOME": str(tmp_path / "home"),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ovi_cli", *map(str, args)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _files(folder: Path, *patterns: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for pat in patterns for p in sorted(folder.rglob(pat))}


def test_bench_generate_two_processes_equal_one(run_cli, tmp_path):
    args = ["bench", "generate", "toy", "--model", "toy", "--steps", "3", "-k", "2", "--limit", "2", "--batch", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*args, "--quiet", "--out", one).code == 0
    res = _torchrun(*args, "--out", two, tmp_path=tmp_path)
    assert "8 images in 2 categories, 0 already done; 2 processes" in res.stderr
    assert res.stdout.strip() == str(two)  # rank 0 alone reports the run
    images = _files(one, "*.png")
    assert len(images) == 8 and _files(two, "*.png") == images
    for cat in ("single", "binding"):
        def records(run, cat=cat):
            return [{k: v for k, v in json.loads(ln).items() if k != "seconds"}
                    for ln in (run / cat / "records.jsonl").read_text().splitlines()]
        assert records(two) == records(one)
        assert sorted(p.name for p in (two / cat / "records.parts").iterdir()) == \
            ["part-00001-of-00002.jsonl", "part-00002-of-00002.jsonl"]
    bench = json.loads((two / "bench.json").read_text())
    assert bench["progress"]["binding"]["images"] == 4


def test_gen_prompts_two_processes_equal_one(run_cli, tiny_gen_args, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\ntwo dogs\nan old car\n")
    args = ["gen", "--prompts", prompts, *tiny_gen_args, "--steps", "3", "--batch", "2", "--save-embedding"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli(*args, "--out", one).code == 0
    _torchrun(*args, "--out", two, tmp_path=tmp_path)
    files = _files(one, "*.png", "*.safetensors")
    assert len(files) == 6 and _files(two, "*.png", "*.safetensors") == files
    for side in one.glob("*.json"):
        a, b = (json.loads(p.read_text()) for p in (side, two / side.name))
        for d in (a, b):
            d.pop("timings"), d.pop("files")
        assert a == b


def test_build_stats_two_processes_equal_one(run_cli, encoder_repo, tmp_path):
    from PIL import Image

    from ovi_stats.store import open_store

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    args = ["build-stats", images, "--encoder-model", encoder_repo, "--batch-size", "2", "--workers", "0"]
    assert run_cli(*args, "--quiet", "--out", tmp_path / "one").code == 0
    res = _torchrun(*args, "--out", tmp_path / "two", tmp_path=tmp_path)
    assert res.stdout.strip() == str(tmp_path / "two")
    one, two = open_store(tmp_path / "one"), open_store(tmp_path / "two")
    assert two.count == one.count == 8 and two.files == one.files
    assert [m["count"] for m in two.meta["merged_from"]] == [4, 4]  # two rank stores, merged by rank 0
    assert np.array_equal(np.asarray(two.embeddings), np.asarray(one.embeddings))  # batches align: exact
    m1, m2 = one.moments(), two.moments()
    assert m2.n == m1.n
    np.testing.assert_allclose(m2.mean, m1.mean, rtol=1e-12, atol=1e-12)  # merged exactly, in float64
    np.testing.assert_allclose(np.asarray(two.cov), np.asarray(one.cov), rtol=1e-10, atol=1e-12)
    assert not list(tmp_path.glob(".two.ranks")), "rank stores removed after the merge"
