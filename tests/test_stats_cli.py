"""`ovi build-stats` and `ovi stats list|info|merge` through the real console entry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / f"p{i:02d}.jpg")
    (root / "broken.png").write_text("no image here")
    return root


def _one_error_line(res, *needles):
    assert res.code != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_build_list_info(run_cli, images, encoder_repo, tmp_path):
    res = run_cli("build-stats", images, "--encoder-model", encoder_repo, "--batch-size", "5", "--workers", "0")
    assert res.code == 0, res.stderr
    path = tmp_path / "home" / "stats" / images.name  # default: named after the folder, under $OVI_HOME
    assert res.stdout.strip() == str(path)
    assert "skipped broken.png: not an image" in res.stderr and "12 embeddings" in res.stderr

    listed = [s for s in json.loads(run_cli("stats", "list", "--json").stdout) if not s["preset"]]
    assert [s["name"] for s in listed] == [images.name] and listed[0]["count"] == 12
    table = run_cli("stats", "list")
    assert table.code == 0 and images.name in table.stdout

    info = json.loads(run_cli("stats", "info", images.name, "--json").stdout)
    assert info["count"] == 12 and info["dim"] == 16 and info["index"] == "flat"
    assert info["encoder"]["source"] == str(encoder_repo) and info["mean_norm"] > 0
    assert info["skipped"] == [{"path": "broken.png", "reason": "not an image (format not recognised)"}]
    text = run_cli("stats", "info", str(path))
    for needle in ("count        12", "dim          16", "mean norm", "index        flat", "skipped      1 files",
                   "broken.png: not an image"):
        assert needle in text.stdout, needle


def test_out_name_shard_merge_index(run_cli, images, encoder_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_ENCODER_MODEL", str(encoder_repo))
    common = ["--workers", "0", "--quiet"]
    assert run_cli("build-stats", images, "--out", tmp_path / "whole", *common).code == 0
    for i in (1, 2):
        res = run_cli("build-stats", images, "--shard", f"{i}/2", *common)
        assert res.code == 0, res.stderr
    names = [s["name"] for s in json.loads(run_cli("stats", "list", "--json").stdout) if not s["preset"]]
    assert sorted(names) == [f"{images.name}-shard1of2", f"{images.name}-shard2of2"]
    res = run_cli("stats", "merge", *names, "--name", "merged", "--index", "hnsw", "--json")
    assert res.code == 0, res.stderr
    merged = json.loads(res.stdout)
    whole = json.loads(run_cli("stats", "info", tmp_path / "whole", "--json").stdout)
    assert merged["count"] == whole["count"] == 12 and merged["index"] == "hnsw"
    assert merged["mean_norm"] == pytest.approx(whole["mean_norm"], rel=1e-6)
    res = run_cli("build-stats", images, "--name", "hn", "--index", "hnsw", *common, "--json")
    assert json.loads(res.stdout)["index_params"]["type"] == "hnsw"


def test_from_embeddings_cli(run_cli, encoder_repo, tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32)
    np.save(tmp_path / "dump.npy", x)
    (tmp_path / "names.json").write_text(json.dumps([f"img{i}.png" for i in range(30)]))
    res = run_cli("build-stats", "--from-embeddings", tmp_path / "dump.npy", "--file-list", tmp_path / "names.json",
                  "--encoder-model", encoder_repo, "--json")
    assert res.code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["name"] == "dump" and info["count"] == 30
    np.save(tmp_path / "wide.npy", np.zeros((4, 32), np.float32))
    _one_error_line(run_cli("build-stats", "--from-embeddings", tmp_path / "wide.npy", "--encoder-model",
                            encoder_repo), "32-d", "16-d")


@pytest.mark.parametrize("args,needles", [
    (["--index", "lsh"], ["--index must be one of"]),
    (["--shard", "3/2"], ["--shard 3/2"]),
    (["--out", "X", "--name", "y"], ["--out PATH or --name NAME"]),
])
def test_usage_errors_are_one_line(run_cli, images, encoder_repo, args, needles):
    _one_error_line(run_cli("build-stats", images, "--encoder-model", encoder_repo, *args), *needles)


def test_data_errors_are_one_line_and_write_nothing(run_cli, encoder_repo, tmp_path, images):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error_line(run_cli("build-stats", empty, "--encoder-model", encoder_repo), "no images")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"")
    (bad / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _one_error_line(run_cli("build-stats", bad, "--encoder-model", encoder_repo, "--workers", "0"),
                    "no valid image", "2 skipped")
    assert not (tmp_path / "home" / "stats" / "bad").exists()
    assert not [p for p in (tmp_path / "home" / "stats").iterdir()]
    _one_error_line(run_cli("build-stats", tmp_path / "nope", "--encoder-model", encoder_repo), "not a folder")
    _one_error_line(run_cli("stats", "info", "nothing-here"), "no statistics store 'nothing-here'")
    (tmp_path / "taken").mkdir()
    _one_error_line(run_cli("build-stats", images, "--out", tmp_path / "taken", "--encoder-model", encoder_repo),
                    "--force")
    _one_error_line(run_cli("stats", "merge", "a", "b"), "--out PATH or --name NAME")


def test_gen_refuses_a_store_of_another_encoder(run_cli, tiny_gen_args, images, encoder_repo, tmp_path):
    from tests.helpers import tiny_models

    other = tiny_models.make_encoder_repo(tmp_path / "other", seed=1)
    res = run_cli("build-stats", images, "--encoder-model", other, "--out", tmp_path / "s", "--workers", "0", "-q")
    assert res.code == 0, res.stderr
    res = run_cli("gen", "a red cube", *tiny_gen_args, "--decoder", "embeds", "-c", "mahalanobis:0.01",
                  "--stats", tmp_path / "s", "--out", tmp_path / "o.png")
    _one_error_line(res, str(other), str(encoder_repo))


@pytest.mark.slow
def test_real_ctrl_c_then_resume_equals_uninterrupted(encoder_repo, tmp_path):
    """SIGINT to the whole process group (as a terminal does), workers included, then --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from safetensors.torch import load_file

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(src / f"{i:04d}.png")
    ovi = [sys.executable, "-c", "from ovi_cli.cli import main; main()"]
    args = ["build-stats", str(src), "--encoder-model", str(encoder_repo), "--batch-size", "4", "--workers", "1",
            "--checkpoint-every", "0"]
    env = {**os.environ, "OVI_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*ovi, *args, "--out", str(tmp_path / "s")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    state = tmp_path / ".s.partial" / "state.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert [ln for ln in err.decode().splitlines() if ln.strip()] == [
        "ovi: error: interrupted: no store was written; rerun the same command with --resume to continue from "
        "the last checkpoint"]
    assert not (tmp_path / "s").exists()
    for out, extra in ((tmp_path / "s", ["--resume"]), (tmp_path / "whole", [])):
        done = subprocess.run([*ovi, *args, "--out", str(out), "-q", *extra], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
    a, b = (load_file(str(Path(p) / "moments.safetensors")) for p in (tmp_path / "s", tmp_path / "whole"))
    assert all(torch_equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(tmp_path / "s" / "embeddings.npy"), np.load(tmp_path / "whole" / "embeddings.npy"))


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))
