"""Building stores under faults, concurrency and bad input (issue 12, item 2); each case was data loss,
silent corruption or a traceback on the old main."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ovi_cli import outputs
from ovi_cli.errors import OviError
from ovi_stats import build as build_mod
from ovi_stats.build import build_stats, work_dir_for
from ovi_stats.images import load_rgb, reduce_factor
from ovi_stats.lock import lock_path_for, store_lock
from tests.helpers.reliability import Stop, interrupt_when, one_line_error, snapshot


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(7)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(root / f"im{i:02d}.png")
    return root



def _interrupted(many, out, encoders, **kw):
    with pytest.raises(Stop):
        build_stats(many, out, encoders, workers=0, checkpoint_seconds=0,
                    on_batch=interrupt_when(lambda b: b == 2), **kw)
    assert work_dir_for(out).is_dir()


def _same_store(a, b):
    ta, tb = load_file(str(a.path / "moments.safetensors")), load_file(str(b.path / "moments.safetensors"))
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    assert a.files == b.files


# ---- one writer per store ------------------------------------------------------------------------
SLOW_BUILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ovi_cli.encoders import Encoders
    from ovi_stats.build import build_stats
    root, out, enc, flag = sys.argv[1:5]
    encoders = Encoders.load(enc, device="cpu")
    def on_batch(b):
        Path(flag).write_text(str(b))
        time.sleep(0.3)
    build_stats(root, out, encoders, batch_size=2, workers=0, checkpoint_seconds=0, on_batch=on_batch)
""")


def test_a_second_build_is_refused_while_one_runs_and_a_crashed_ones_lock_is_taken_over(
        many, encoders, encoder_repo, tmp_path, run_cli):
    """Old main: a second build into the same --out was told "use --resume"; following that advice
    left the first run's embeddings.npy disagreeing with files.json (2,752 of 3,000 rows), and with
    --force the first run died with `mmap length is greater than file size`."""
    out, flag = tmp_path / "s", tmp_path / "started"
    first = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(many), str(out), str(encoder_repo), str(flag)],
                             stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.1)
        common = ["--encoder-model", encoder_repo, "--workers", "0", "--out", out]
        for extra in ([], ["--resume"], ["--force"]):
            one_line_error(run_cli("build-stats", many, *common, *extra), f"build in progress (pid {first.pid})")
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)  # a crash: the lock file stays, naming a dead pid
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert lock_path_for(out).read_text().strip() == str(first.pid) and work_dir_for(out).is_dir()
    res = run_cli("build-stats", many, *common, "--resume", "--quiet")
    assert res.code == 0, res.stderr
    whole = build_stats(many, tmp_path / "whole", encoders, batch_size=2, workers=0).store
    from ovi_stats.store import open_store

    _same_store(open_store(out), whole)
    assert not lock_path_for(out).exists() and not work_dir_for(out).exists()


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    final = tmp_path / "s"
    with store_lock(final) as info:
        assert info.stale_pid is None and lock_path_for(final).read_text().strip() == str(os.getpid())
        probe = subprocess.run([sys.executable, "-c", f"from ovi_stats.lock import store_lock\n"
                                f"with store_lock(__import__('pathlib').Path({str(final)!r})): pass"],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and f"build in progress (pid {os.getpid()})" in probe.stderr
    assert not lock_path_for(final).exists()


# ---- --resume ------------------------------------------------------------------------------------
def test_resume_refuses_changed_settings_naming_them(many, encoders, encoder_repo, tmp_path, run_cli):
    """Old main: `--resume` with another --limit/--shard/--batch-size/--index silently ignored them
    (3,000 embeddings built where 100 were asked) or mixed settings."""
    out = tmp_path / "s"
    _interrupted(many, out, encoders, batch_size=4, limit=20)
    common = ["--encoder-model", encoder_repo, "--workers", "0", "--out", out, "--resume"]
    msg = one_line_error(run_cli("build-stats", many, *common, "--limit", "10", "--batch-size", "5", "--index", "hnsw"),
                         "--resume: the interrupted build", "--force to start over")
    assert "--limit 20 (now 10), --batch-size 4 (now 5), --index auto (now hnsw)" in msg
    one_line_error(run_cli("build-stats", many, *common), "--limit 20 (now none)")
    one_line_error(run_cli("build-stats", many, *common, "--limit", "20", "--shard", "1/2"), "--shard none (now 1/2)")
    res = run_cli("build-stats", many, *common, "--limit", "20", "--quiet")  # batch size and index: as planned
    assert res.code == 0, res.stderr
    whole = build_stats(many, tmp_path / "whole", encoders, batch_size=4, workers=0, limit=20).store
    from ovi_stats.store import open_store

    _same_store(open_store(out), whole)


@pytest.mark.parametrize("flag, value, needle", [
    ("--checkpoint-every", "nan", "--checkpoint-every must be a finite number"),
    ("--checkpoint-every", "inf", "--checkpoint-every must be a finite number"),
    ("--checkpoint-every", "-1", "--checkpoint-every must be >= 0"),
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--batch-size", "100000000", "--batch-size must be <= 65536"),
    ("--workers", "-1", "--workers must be >= 0"),
    ("--limit", "0", "--limit must be >= 1"),
])
def test_bad_build_numbers_are_refused_before_the_encoder_loads(many, tmp_path, run_cli, flag, value, needle):
    """Old main: `--checkpoint-every nan` meant no checkpoints at all."""
    res = run_cli("build-stats", many, "--out", tmp_path / "s", flag, value, "--encoder-model", tmp_path / "none")
    one_line_error(res, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_plan_or_checkpoint_is_one_line(many, encoders, tmp_path):
    """Old main: resume trusted plan.json's file list (`root / files[pos]` could point anywhere)."""
    out = tmp_path / "s"
    _interrupted(many, out, encoders, batch_size=4)
    work = work_dir_for(out)
    plan = json.loads((work / "plan.json").read_text())
    (work / "plan.json").write_text(json.dumps({**plan, "files": ["../../../etc/passwd"] + plan["files"][1:]}))
    with pytest.raises(OviError, match="damaged .*plan.json: files must be .* inside the image folder.*--force"):
        build_stats(many, out, encoders, workers=0, resume=True)
    (work / "plan.json").write_text(json.dumps(plan))
    (work / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(OviError, match="damaged .*state.safetensors"):
        build_stats(many, out, encoders, workers=0, resume=True)
    (work / "notes.txt").write_text("mine")
    with pytest.raises(OviError, match="files a build does not write.*'notes.txt'"):
        build_stats(many, out, encoders, workers=0, force=True)
    assert (work / "notes.txt").read_text() == "mine"
    (work / "notes.txt").unlink()
    assert build_stats(many, out, encoders, workers=0, force=True).store.count == 24


# ---- deterministic and write failures ----------------------------------------------------------
def test_zero_variance_cleans_up_so_every_rerun_gives_the_same_answer(tmp_path, encoders, encoder_repo, run_cli):
    """Old main: the "zero variance" error left a .partial that made every rerun, --resume and --force
    fail with another message."""
    src = tmp_path / "twins"
    src.mkdir()
    im = Image.fromarray(np.full((20, 20, 3), 90, dtype=np.uint8))
    im.save(src / "a.png")
    im.save(src / "b.png")
    out = tmp_path / "s"
    for extra in ([], [], ["--resume"], ["--force"]):
        res = run_cli("build-stats", src, "--out", out, "--encoder-model", encoder_repo, "--workers", "0", *extra)
        one_line_error(res, "zero variance")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["twins"]


class _Full:
    """A handle that fails like a full disk."""

    def __init__(self):
        self._fd = os.open(os.devnull, os.O_RDONLY)

    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self):
        return self._fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _disk_full_for(monkeypatch, name: str) -> None:
    real = outputs.new_file

    def new_file(path):
        return _Full() if name in Path(path).name else real(path)

    monkeypatch.setattr(outputs, "new_file", new_file)
    import ovi_stats.store

    monkeypatch.setattr(ovi_stats.store, "new_file", new_file)


@pytest.mark.parametrize("name", ["state.safetensors", "moments.safetensors", "index.faiss", "plan.json"])
def test_disk_full_is_one_line_and_resumable(many, encoders, encoder_repo, tmp_path, run_cli, monkeypatch, name):
    """Old main: the final state save raised SafetensorError (only OSError was caught), and a full disk
    at plan.json left an empty .partial that blocked every rerun."""
    out = tmp_path / "s"
    common = ["--encoder-model", encoder_repo, "--workers", "0", "--out", out, "--batch-size", "4"]
    with monkeypatch.context() as m:
        _disk_full_for(m, name)
        one_line_error(run_cli("build-stats", many, *common), "No space left on device")
    assert not out.exists() and not lock_path_for(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".ovi-tmp")]
    if name == "plan.json":
        assert not work_dir_for(out).exists()  # nothing to resume: no empty .partial blocking reruns
        res = run_cli("build-stats", many, *common, "--quiet")
    else:
        res = run_cli("build-stats", many, *common, "--resume", "--quiet")
    assert res.code == 0, res.stderr
    assert not work_dir_for(out).exists() and json.loads((out / "meta.json").read_text())["count"] == 24


def test_a_broken_files_name_is_printed_escaped(tmp_path, encoder_repo, run_cli):
    """Old main: control characters in file names went to the terminal raw."""
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(src / f"{i}.png")
    (src / "evil\x1b[2J[red]x.png").write_bytes(b"not an image")
    res = run_cli("build-stats", src, "--out", tmp_path / "s", "--encoder-model", encoder_repo, "--workers", "0")
    assert res.code == 0, res.stderr
    assert "\x1b" not in res.stderr and "evil\\x1b[2J[red]x.png" in res.stderr


# ---- large images ----------------------------------------------------------------------------------
def test_large_images_are_decoded_at_reduced_size(tmp_path):
    """Old main: six valid 12000x12000 PNGs with --batch-size 8 under 6 GB were all skipped as
    "preprocessing failed (MemoryError)": every batch held full-size decodes."""
    big = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    assert reduce_factor(2000, 1500, 32) == 11 and reduce_factor(200, 120, 32) == 1
    for name in ("big.png", "big.jpg"):
        im = load_rgb(tmp_path / name, min_side=32)
        assert im.mode == "RGB" and 128 <= min(im.size) < 256, (name, im.size)
    assert load_rgb(tmp_path / "big.png").size == (2000, 1500)  # without a target: full size


def test_the_build_feeds_reduced_images_to_the_encoder(tmp_path, encoders, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (900, 700, 3), dtype=np.uint8)).save(src / f"{i}.png")
    seen = []
    real = build_mod.load_rgb

    def spy(path, min_side=None):
        im = real(path, min_side)
        seen.append(im.size)
        return im

    monkeypatch.setattr(build_mod, "load_rgb", spy)
    store = build_stats(src, tmp_path / "s", encoders, workers=0).store
    assert store.count == 4 and all(min(s) < 8 * encoders.image_size for s in seen), seen


def test_nothing_is_left_behind_by_a_refused_build(many, tmp_path, run_cli):
    before = snapshot(tmp_path)
    one_line_error(run_cli("build-stats", many, "--out", tmp_path / "x" / "y", "--shard", "3/2",
                           "--encoder-model", tmp_path / "none"), "--shard")
    assert snapshot(tmp_path) == before
