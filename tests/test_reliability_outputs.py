"""The one write helper (`ovi_cli.outputs`): exclusive unpredictable temporaries, no symlinks followed,
modes through the handle, one-line errors, finite JSON, stale temporaries cleaned (issue 12, item 5)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ovi_cli import outputs
from ovi_cli.errors import OviError
from ovi_cli.outputs import (
    OutputError,
    atomic_outputs,
    atomic_write_json,
    clean_stale_temps,
    finite_or_none,
    json_text,
    temp_name,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask():
    """Set a umask for the test (and the helper's cached copy), restore both after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)
        outputs._UMASK = None

    yield set_mask
    os.umask(saved)
    outputs._UMASK = None


def test_temp_names_are_unpredictable_hidden_and_recognisable():
    a, b = temp_name("x.png"), temp_name("x.png")
    assert a != b and a.startswith(".x.png.") and a.endswith(".ovi-tmp")
    assert outputs._TEMP_RE.match(a) and str(os.getpid()) in a
    for long in ("n" * 250 + ".png", "日本" * 80 + ".png"):
        assert len(temp_name(long).encode()) < 255


def test_a_planted_symlink_at_the_final_path_is_replaced_not_followed(tmp_path, umask):
    """Old main: the temp name was predictable, opened without O_EXCL and chmod'ed by path, so a
    planted symlink made a user's 0600 file be overwritten with sidecar JSON and turned 0644."""
    umask(0o022)
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    secret.chmod(0o600)
    out = tmp_path / "out"
    out.mkdir()
    (out / "r.json").symlink_to(secret)
    atomic_write_json(out / "r.json", {"a": 1})
    assert secret.read_text() == "private" and _mode(secret) == 0o600
    assert not (out / "r.json").is_symlink() and json.loads((out / "r.json").read_text()) == {"a": 1}
    assert _mode(out / "r.json") == 0o644


def test_a_planted_temporary_name_is_never_opened(tmp_path, monkeypatch):
    """Even when an attacker guesses the temporary name, O_EXCL|O_NOFOLLOW refuses it: nothing written
    through it, one-line error after a few fresh names."""
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: "0" * 16)
    planted = tmp_path / temp_name("r.json")
    planted.symlink_to(secret)
    with pytest.raises(OutputError) as info:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert "\n" not in str(info.value) and "r.json" in str(info.value)
    assert secret.read_text() == "private" and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_every_output_file_gets_the_umask_mode_through_its_handle(tmp_path, umask, mask, file_mode, dir_mode):
    """Old main: moments.safetensors was 0600 while the rest of a store was 0644."""
    import numpy as np

    from ovi_stats.store import write_store

    umask(mask)
    with atomic_outputs() as out:
        out.write_with(tmp_path / "a.bin", lambda f: f.write(b"x"))  # a writer like PIL or safetensors
        out.write_json(tmp_path / "b.json", {})
    assert _mode(tmp_path / "a.bin") == _mode(tmp_path / "b.json") == file_mode
    x = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    store = write_store(tmp_path / "store", x, [str(i) for i in range(20)], encoder={"source": "s", "fingerprint": "f"})
    assert _mode(store.path) == dir_mode
    assert {p.name: _mode(p) for p in store.path.iterdir()} == {p.name: file_mode for p in store.path.iterdir()}


def test_a_write_error_is_one_line_and_leaves_nothing(tmp_path):
    def disk_full(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError) as info:
        with atomic_outputs() as out:
            out.write_json(tmp_path / "ok.json", {"a": 1})
            out.write_with(tmp_path / "img.png", disk_full)
    assert str(info.value) == f"cannot write {str(tmp_path / 'img.png')!r}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_safetensors_error_is_one_line_too(tmp_path):
    """Old main: only OSError was caught; `save_file` on a full disk raised SafetensorError, a traceback."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def writer(handle):  # what safetensors raises on an I/O failure (here: an unwritable path)
        save_file({"a": torch.zeros(2)}, "/proc/no-such-dir/x.safetensors")

    with pytest.raises(SafetensorError):
        writer(None)
    with pytest.raises(OutputError, match="cannot write .*e.safetensors.*: Error while serializing"):
        with atomic_outputs() as out:
            out.write_with(tmp_path / "e.safetensors", writer)
    assert list(tmp_path.iterdir()) == []


def test_folder_in_the_way_and_file_in_the_way_are_one_line(tmp_path):
    (tmp_path / "r.json").mkdir()
    with pytest.raises(OutputError, match="folder is in the way"):
        atomic_write_json(tmp_path / "r.json", {})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="a file is in the way"):
        atomic_write_json(tmp_path / "afile" / "r.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "r.json"]


def test_a_failed_commit_removes_the_files_it_already_renamed(tmp_path):
    (tmp_path / "b.json").mkdir()  # the second rename fails
    with pytest.raises(OutputError):
        with atomic_outputs() as out:
            out.write_json(tmp_path / "a.json", {})
            out.write_json(tmp_path / "b.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_non_finite_numbers_are_refused_naming_the_field(tmp_path):
    """Old main: `--lr inf` wrote `"text_cosine": NaN`, which is not JSON."""
    with pytest.raises(OutputError) as info:
        atomic_write_json(tmp_path / "s.json", {"prompt": "x", "history": {"loss": [0.5, float("nan")]}})
    assert "history.loss[1] is not a finite number" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OviError, match="text_cosine"):
        json_text({"text_cosine": float("inf")})
    assert finite_or_none({"a": [1.0, float("nan"), float("-inf")], "b": 2}) == {"a": [1.0, None, None], "b": 2}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_cleaned(tmp_path):
    host = outputs._host()
    dead = _dead_pid()
    stale_file = tmp_path / f".a.png.{host}-{dead}-{'1' * 16}.ovi-tmp"
    stale_dir = tmp_path / f".store.{host}-{dead}-{'2' * 16}.ovi-tmp"
    alive = tmp_path / f".b.png.{host}-{os.getpid()}-{'3' * 16}.ovi-tmp"
    other_host = tmp_path / f".c.png.otherhost-{dead}-{'4' * 16}.ovi-tmp"
    users = [tmp_path / ".hidden.123.tmp", tmp_path / "notes.txt"]
    stale_file.write_bytes(b"half")
    stale_dir.mkdir()
    (stale_dir / "embeddings.npy").write_bytes(b"half")
    for p in (alive, other_host, *users):
        p.write_bytes(b"keep")
    atomic_write_json(tmp_path / "new.json", {})  # the first write into a folder cleans it
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([alive.name, other_host.name, *(p.name for p in users), "new.json"])
    assert clean_stale_temps(tmp_path, again=True) == []


def test_install_dir_replaces_a_folder_atomically(tmp_path, umask):
    umask(0o022)
    final = tmp_path / "d"
    final.mkdir()
    (final / "old").write_text("old")
    tmp = outputs.private_dir(final)
    assert _mode(tmp) == 0o700
    (tmp / "new").write_text("new")
    outputs.install_dir(tmp, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"] and _mode(final) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_the_toy_dataset_folder_gets_the_usual_modes(tmp_path, umask):
    """Old main: the dataset folder came from tempfile.mkdtemp and stayed 0700."""
    from ovi_plugins.toy.dataset import write_dataset

    umask(0o022)
    write_dataset(tmp_path / "d", 2, heldout=1)
    entries = [tmp_path / "d", *(tmp_path / "d").rglob("*")]
    assert {p.name: _mode(p) for p in entries} == {p.name: 0o755 if p.is_dir() else 0o644 for p in entries}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_create_exclusive_wins_once_with_the_usual_mode(tmp_path, umask):
    """bench.json is created by exactly one process (hard link), with the mode of every other output."""
    from ovi_cli.outputs import create_exclusive

    umask(0o022)
    assert create_exclusive(tmp_path / "bench.json", b"first") is True
    assert create_exclusive(tmp_path / "bench.json", b"second") is False
    assert (tmp_path / "bench.json").read_bytes() == b"first" and _mode(tmp_path / "bench.json") == 0o644
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert create_exclusive(tmp_path / "link", b"x") is False and not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "link"]
