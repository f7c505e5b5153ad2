"""Issue 22's hostile findings in the gen / bench generate / bench score runs, each reproduced first.

Each test is what a hostile user did on main, and what must happen instead: exit 2 with one line
naming the plugin, prompt or file; nothing mixed, lost or half-written; no cache that blocks later
runs. The runs use the shipped toy world (`--model toy`, offline, CPU, a few steps).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_cli import hookimpl
from ovi_cli.api import ImageScore, Scorer
from ovi_cli.plugins import load_registry, set_registry

TOY_GEN = ("--model", "toy", "--steps", "3", "--quiet")
TOY_BENCH = ("bench", "generate", "toy", "--model", "toy", "--steps", "3", "-k", "1", "--limit", "1", "--quiet")


def one_line(res, *needles: str, code: int = 2) -> str:
    assert res.code == code, (res.code, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    assert "unexpected error" not in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _prompts(tmp_path: Path, text: str, name: str = "p.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- bench generate ------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["...and a blue ball", ".", ".."])
def test_bench_prompt_lines_that_make_hidden_or_impossible_file_names_are_refused(run_cli, tmp_path, line):
    """Old main: `...and a blue ball` was written as a hidden file and never scored; `.`/`..` gave {}."""
    file = _prompts(tmp_path, f"a red circle\n{line}\n")
    res = run_cli(*TOY_BENCH, "--limit", "2", "--prompt-file", f"single={file}", "--out", tmp_path / "run")
    one_line(res, repr(line), "starts with '.'", "single prompt 2")
    assert not (tmp_path / "run").exists()  # refused before any model loaded or anything was written


def test_bench_seed_beyond_64_bits_is_refused_before_anything_is_written(run_cli, tmp_path):
    """Old main: image 0 was written, then "Overflow when unpacking long long" (exit 1)."""
    res = run_cli(*TOY_BENCH, "-k", "2", "--seed", "18446744073709551615", "--out", tmp_path / "run")
    one_line(res, "--seed")
    assert not (tmp_path / "run").exists()


def test_a_huge_plan_is_refused_at_once_not_built_in_memory(run_cli, tmp_path):
    """Old main: `-k 10000000` grew to 4.5 GB with no output and nothing written."""
    start = time.perf_counter()
    res = run_cli(*TOY_BENCH, "-k", "10000000", "--limit", "12", "--out", tmp_path / "run")
    one_line(res, "at most 2,000,000", "-k")
    assert time.perf_counter() - start < 20 and not (tmp_path / "run").exists()


def test_a_replaced_decoder_is_noticed_on_resume(run_cli, tmp_path):
    """Old main: a model folder replaced in place between a run and its resume was not noticed."""
    import shutil

    from ovi_plugins.toy.preset import toy_paths

    decoder = tmp_path / "decoder"
    shutil.copytree(toy_paths()["decoder"], decoder)
    run = tmp_path / "run"
    assert run_cli(*TOY_BENCH, "--decoder-model", decoder, "--out", run).code == 0
    identity = json.loads((run / "bench.json").read_text())["identity"]
    assert identity["decoder_fingerprint"] and identity["stats_fingerprint"] is None
    weights = next(p for p in sorted(decoder.rglob("*.safetensors")))
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\x00\x00\x80\x3f"  # the same shapes, another last weight
    weights.write_bytes(bytes(data))
    res = run_cli(*TOY_BENCH, "--limit", "2", "--decoder-model", decoder, "--out", run)
    one_line(res, "decoder_fingerprint", "other settings")


def test_a_record_that_cannot_be_appended_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Old main: 16 KiB free at the record append was "unexpected error" (exit 1)."""
    from ovi_cli.bench.runlog import RecordLog
    from ovi_cli.errors import OviError

    log = RecordLog(tmp_path, "single", "part-0-of-1")

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OviError, match="part-0-of-1.jsonl.*No space left"):
        log.append({"index": 0})
    monkeypatch.undo()
    log.close()


# ---- gen --prompts -------------------------------------------------------------------------------
def test_gen_resume_compares_prompts_exactly(run_cli, tmp_path):
    """Old main: `a red cube!` into a folder made from `a red cube` said "1 of 1 already done"."""
    out = tmp_path / "out"
    assert run_cli("gen", "--prompts", _prompts(tmp_path, "a red cube\n"), *TOY_GEN, "-o", out).code == 0
    other = _prompts(tmp_path, "a red cube!\n", "q.txt")
    one_line(run_cli("gen", "--prompts", other, *TOY_GEN, "-o", out), "prompt 'a red cube' -> 'a red cube!'",
             "--overwrite")
    assert run_cli("gen", "--prompts", other, *TOY_GEN, "-o", out, "--overwrite").code == 0
    assert json.loads((out / "0000-a-red-cube.json").read_text())["prompt"] == "a red cube!"


def test_gen_records_batch_and_refuses_a_resume_with_another(run_cli, tmp_path):
    """Old main: `--batch` (which changes the bytes) was not recorded; a resume mixed both, exit 0."""
    out, prompts = tmp_path / "out", _prompts(tmp_path, "a red circle\na blue square\n")
    assert run_cli("gen", "--prompts", prompts, *TOY_GEN, "--batch", "2", "-o", out).code == 0
    assert json.loads((out / "0000-a-red-circle.json").read_text())["settings"]["batch"] == 2
    one_line(run_cli("gen", "--prompts", prompts, *TOY_GEN, "-o", out), "batch 2 -> 1")


def test_gen_nn_k_flag_and_option_are_the_same_setting_on_resume(run_cli, tmp_path):
    """Old main: a run made with `--nn-k 2` resumed with `--option nn.k=2` was refused ("2 -> '2'")."""
    out, prompts = tmp_path / "out", _prompts(tmp_path, "a red circle\n")
    assert run_cli("gen", "--prompts", prompts, *TOY_GEN, "-c", "nn", "--nn-k", "2", "-o", out).code == 0
    res = run_cli("gen", "--prompts", prompts, *TOY_GEN, "-c", "nn", "--option", "nn.k=2", "-o", out)
    assert res.code == 0, res.stderr


def test_two_gen_runs_with_other_settings_cannot_write_one_folder_at_once(run_cli, tmp_path):
    """Old main: two `gen --prompts` into one folder at once both exit 0, the folder mixed."""
    out, prompts = tmp_path / "out", _prompts(tmp_path, "a red circle\n")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # another run (a live process on this host) is writing there now, with 9 steps
        out.mkdir()
        (out / ".ovi-gen.json").write_text(json.dumps({"settings": {"steps": 9}, "writers": [
            {"host": os.uname().nodename, "pid": other.pid}]}))
        one_line(run_cli("gen", "--prompts", prompts, *TOY_GEN, "-o", out), f"pid {other.pid}", "steps 9 -> 3")
        assert not list(out.glob("*.png"))
    finally:
        other.kill()
        other.wait()
    res = run_cli("gen", "--prompts", prompts, *TOY_GEN, "-o", out)  # its process is gone: the claim is stale
    assert res.code == 0, res.stderr
    assert not (out / ".ovi-gen.json").exists()


def test_gen_with_a_long_legal_output_name(run_cli, tmp_path):
    """Old main: a legal 240-character `-o` name failed on a temporary name that was too long."""
    name = "x" * 236 + ".png"
    res = run_cli("gen", "a red circle", *TOY_GEN, "--save-embedding", "-o", tmp_path / name)
    assert res.code == 0, res.stderr
    assert (tmp_path / name).is_file() and (tmp_path / name).with_suffix(".json").is_file()


def test_lr_far_out_of_range_is_refused_before_models_load(run_cli, tmp_path):
    """Old main: `--lr 1e38` was "unexpected error: value cannot be converted to type float" after loading."""
    one_line(run_cli("gen", "a red circle", *TOY_GEN, "--lr", "1e38", "-o", tmp_path / "a.png"), "--lr", "<=")
    assert not (tmp_path / "a.png").exists()


def test_ctrl_c_after_the_command_is_one_line_and_130(tmp_path):
    """Old main: Ctrl-C while the interpreter ran its exit handlers printed "Exception ignored in atexit
    callback ... KeyboardInterrupt" and exited 0."""
    code = ("import atexit, os, signal, sys, time\n"
            "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(2)))\n"
            "sys.argv = ['ovi', '--version']\n"
            "from ovi_cli.entry import main\nmain()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == ["ovi: error: interrupted; files of unfinished results were not written"], res.stderr
    assert signal.SIGINT  # (the handler is the console script's own)


# ---- bench score ---------------------------------------------------------------------------------
def _image_run(root: Path, n: int = 2) -> Path:
    """A toy run folder with `n` random images in `single` (what `ovi bench generate toy` writes)."""
    rng = np.random.default_rng(0)
    d = root / "single" / "samples"
    d.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"a red circle_{i:06d}.png")
    (root / "bench.json").write_text(json.dumps({"benchmark": "toy", "settings": {"prior": "ovi"}}))
    return root


class Hostile:
    """Scorer plugins that misbehave in the ways a hostile tester tried; `how` picks one."""

    how = ""

    class Bad(Scorer):
        name = "bad"

        def settings(self):
            if Hostile.how == "settings-nan":
                return {"threshold": float("nan")}
            if Hostile.how == "settings-object":
                return {"model": object()}
            if Hostile.how == "settings-raise":
                raise RuntimeError("no settings")
            return {"v": 1}

        def load(self):
            if Hostile.how == "load-exit0":
                raise SystemExit(0)
            if Hostile.how == "load-raise":
                raise ValueError("weights missing")

        def score(self, items, inputs):
            if Hostile.how == "score-exit3":
                raise SystemExit(3)
            if Hostile.how == "score-nan":
                return [ImageScore(float("nan")) for _ in items]
            return [ImageScore(0.5) for _ in items]

    class Loop(Scorer):
        name = "loop"
        requires = ("loop2",)

        def score(self, items, inputs):
            return [ImageScore(1.0) for _ in items]

    class Loop2(Loop):
        name = "loop2"
        requires = ("loop",)

    @hookimpl
    def register_scorers(self, register):
        for cls in (self.Bad, self.Loop, self.Loop2):
            register(cls)


@pytest.fixture
def hostile():
    set_registry(load_registry(extra=[("hostile", Hostile())]))
    yield Hostile
    Hostile.how = ""
    set_registry(None)


@pytest.mark.parametrize("how,needle", [
    ("load-exit0", "scorer 'bad' failed to load: SystemExit(0)"),
    ("load-raise", "scorer 'bad' failed to load: ValueError: weights missing"),
    ("score-exit3", "scorer 'bad' failed: SystemExit(3)"),
    ("score-nan", "scorer 'bad' failed: returned nan"),
    ("settings-nan", "scorer 'bad': settings() returned"),
    ("settings-object", "scorer 'bad': settings() returned"),
    ("settings-raise", "scorer 'bad' failed in settings(): RuntimeError: no settings"),
])
def test_a_failing_scorer_is_one_line_naming_it_and_the_others_are_scored(run_cli, tmp_path, hostile, how, needle):
    """Old main: SystemExit(0) in load() exited 0 with nothing scored, SystemExit(3) exited 3 silently,
    NaN scores were written and blocked every later run, and raising plugins were "unexpected error"."""
    run = _image_run(tmp_path / "run")
    hostile.how = how
    one_line(run_cli("bench", "score", run, "--scorers", "bad,oracle", "-q"), needle)
    scores = json.loads((run / "scores.json").read_text())
    assert scores["categories"]["single"]["oracle"]["images"] == 2  # the other scorer was scored
    assert "bad" not in scores["categories"]["single"]
    cache = run / "single" / "scores" / "bad.jsonl"
    assert not cache.exists() or "NaN" not in cache.read_text()
    hostile.how = ""  # fixed: the next run scores it, nothing blocks
    assert run_cli("bench", "score", run, "--scorers", "bad,oracle", "-q").code == 0
    assert json.loads((run / "scores.json").read_text())["categories"]["single"]["bad"]["mean"] == 0.5


@pytest.mark.parametrize("junk", ["nan-score", "junk-bytes", "nan-header"])
def test_a_cache_holding_junk_is_scored_again_never_blocks(run_cli, tmp_path, hostile, junk):
    """Old main: a hand-edited NaN or junk bytes in scores/NAME.jsonl failed every later run."""
    run = _image_run(tmp_path / "run")
    assert run_cli("bench", "score", run, "--scorers", "bad", "-q").code == 0
    cache = run / "single" / "scores" / "bad.jsonl"
    lines = cache.read_text().splitlines()
    if junk == "nan-score":
        cache.write_text(lines[0] + "\n" + lines[1].replace("0.5", "NaN") + "\n" + lines[2] + "\n")
    elif junk == "junk-bytes":
        cache.write_bytes(b"\xff\xfe\x00garbage\n" + "\n".join(lines[1:]).encode())
    else:
        cache.write_text(lines[0].replace('"v": 1', '"v": NaN') + "\n" + "\n".join(lines[1:]) + "\n")
    res = run_cli("bench", "score", run, "--scorers", "bad", "-q")
    assert res.code == 0, res.stderr
    entry = json.loads((run / "scores.json").read_text())["categories"]["single"]["bad"]
    assert entry["images"] == 2 and math.isfinite(entry["mean"])


def test_cyclic_requires_is_one_line(run_cli, tmp_path, hostile):
    """Old main: scorers requiring each other were "unexpected error: RecursionError"."""
    one_line(run_cli("bench", "score", _image_run(tmp_path / "run"), "--scorers", "loop", "-q"), "requires itself")


@pytest.mark.parametrize("bad", ["truncated", "not-an-image", "folder", "dangling"])
def test_an_unreadable_sample_is_one_line_naming_it(run_cli, tmp_path, bad):
    """Old main: a truncated, non-image, folder or dangling sample was "unexpected error" naming no file."""
    run = _image_run(tmp_path / "run")
    sample = run / "single" / "samples" / "a red circle_000005.png"
    if bad == "truncated":
        sample.write_bytes((run / "single" / "samples" / "a red circle_000000.png").read_bytes()[:60])
    elif bad == "not-an-image":
        sample.write_text("hello")
    elif bad == "folder":
        sample.mkdir()
    else:
        sample.symlink_to(tmp_path / "nowhere.png")
    one_line(run_cli("bench", "score", run, "--scorers", "oracle", "-q"), "a red circle_000005.png")


def test_bench_table_json_prints_no_bare_nan(run_cli, tmp_path):
    """Old main: a NaN in scores.json came out of `bench table --json` as bare NaN (not JSON)."""
    run = _image_run(tmp_path / "run")
    assert run_cli("bench", "score", run, "--scorers", "oracle", "-q").code == 0
    doc = json.loads((run / "scores.json").read_text())
    doc["categories"]["single"]["oracle"]["mean"] = float("nan")
    (run / "scores.json").write_text(json.dumps(doc))
    res = run_cli("bench", "table", run, "--json")
    assert res.code == 0, res.stderr
    assert "NaN" not in res.stdout
    json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c}"))
