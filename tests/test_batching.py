"""`ovi gen --prompts FILE --batch N`: batched == alone, resume after an interruption, early stopping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

PROMPTS = ["a red cube on a table", "two dogs in the snow", "an old blue car", "a bowl of green apples"]
EARLY = ["--patience", "10", "--min-delta", "1e-2", "--steps", "40"]




def _write_prompts(tmp_path: Path, prompts=PROMPTS) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment line\n" + "\n".join(prompts) + "\n\n", encoding="utf-8")
    return path


def _results(folder: Path) -> list[tuple[dict, torch.Tensor]]:
    out = []
    for side in sorted(folder.glob("*.json")):
        out.append((json.loads(side.read_text()), load_file(side.with_suffix(".safetensors"))["image_embeds"]))
    return out


def test_batched_prompts_equal_each_prompt_alone(run_cli, tiny_gen_args, tmp_path):
    folder = tmp_path / "batched"
    res = run_cli("gen", "--prompts", _write_prompts(tmp_path), *tiny_gen_args, *EARLY, "--decoder", "embeds",
                  "--batch", "4", "--seed", "5", "--out", folder)
    assert res.code == 0, res.stderr
    results = _results(folder)
    assert [Path(r[0]["files"]["sidecar"]).name[:5] for r in results] == ["0000-", "0001-", "0002-", "0003-"]
    used = [side["steps_used"] for side, _ in results]
    assert min(used) < 40 == max(used), f"some prompts should leave the batch early, got {used}"
    for i, (side, emb) in enumerate(results):
        assert side["prompt"] == PROMPTS[i] and side["seed"] == 5 + i  # line i uses seed + i
        out = tmp_path / f"alone{i}.png"
        res = run_cli("gen", PROMPTS[i], *tiny_gen_args, *EARLY, "--decoder", "embeds", "--seed", str(5 + i),
                      "--out", out)
        assert res.code == 0, res.stderr
        alone_side = json.loads(out.with_suffix(".json").read_text())
        alone_emb = load_file(out.with_suffix(".safetensors"))["image_embeds"]
        assert alone_side["steps_used"] == side["steps_used"]
        assert torch.allclose(alone_emb, emb, atol=1e-5, rtol=1e-4)
        assert alone_side["text_cosine"] == pytest.approx(side["text_cosine"], abs=1e-5)


def test_early_stopping_records_steps_used(run_cli, tiny_gen_args, tmp_path):
    folder = tmp_path / "es"
    res = run_cli("gen", "--prompts", _write_prompts(tmp_path, PROMPTS[:2]), *tiny_gen_args, *EARLY,
                  "--decoder", "embeds", "--batch", "2", "--out", folder)
    assert res.code == 0, res.stderr
    for side, _ in _results(folder):
        assert side["steps"] == 40
        assert 0 < side["steps_used"] <= 40 and side["steps_used"] % 10 == 0  # checked every 10 steps
        assert len(side["history"]["text_cosine"]) == side["steps_used"]
    res = run_cli("gen", PROMPTS[0], *tiny_gen_args, "--steps", "30", "--decoder", "embeds",
                  "--out", tmp_path / "off.png")
    assert res.code == 0, res.stderr
    side = json.loads((tmp_path / "off.json").read_text())
    assert side["steps_used"] == 30  # --patience 0: every step runs
    assert side["ovi_dtype"] == "float32" and side["compiled"] is False


def test_interrupted_run_resumes_without_redoing_finished_prompts(run_cli, tiny_gen_args, tmp_path, monkeypatch):
    import ovi_cli.engine as priors  # the prior imports the engine when it runs

    real = priors.optimize
    calls: list[list[int]] = []
    interrupt = {"at": 2}

    def interrupt_second(*args, **kwargs):
        calls.append(list(kwargs["seeds"]))
        if len(calls) == interrupt["at"]:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second batch
        return real(*args, **kwargs)

    monkeypatch.setattr(priors, "optimize", interrupt_second)
    prompts = _write_prompts(tmp_path, PROMPTS[:3])
    folder = tmp_path / "run"
    args = ("gen", "--prompts", prompts, *tiny_gen_args, "--decoder", "embeds", "--batch", "1", "--out", folder)
    res = run_cli(*args)
    assert res.code == 130
    assert "interrupted" in res.stderr
    done = sorted(p.name for p in folder.iterdir())
    assert [n for n in done if n.endswith(".json")] == [done[0]] and done[0].startswith("0000-")
    assert not any(n.startswith(("0001-", "0002-")) for n in done), "nothing half-written"
    first = folder / done[0]
    stamp = first.stat().st_mtime_ns

    calls.clear()
    interrupt["at"] = 0
    res = run_cli(*args)
    assert res.code == 0, res.stderr
    assert calls == [[1], [2]], "only the unfinished prompts run again (seeds seed+1, seed+2)"
    assert first.stat().st_mtime_ns == stamp
    assert len(list(folder.glob("*.json"))) == 3


def test_compile_failure_is_one_warning_line_and_the_run_goes_on(run_cli, tiny_gen_args, tmp_path, monkeypatch):
    import ovi_cli.engine as engine

    def broken(fn):
        def call(tokens):
            raise RuntimeError("InductorError: no working C++ compiler\n  long\n  traceback")
        return call

    monkeypatch.setattr(engine, "_compile", broken)
    folder = tmp_path / "c"
    res = run_cli("gen", "--prompts", _write_prompts(tmp_path, PROMPTS[:2]), *tiny_gen_args, "--decoder", "embeds",
                  "--compile", "--out", folder)
    assert res.code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: warning: --compile failed"), res.stderr
    assert all(side["compiled"] is False for side, _ in _results(folder))


@pytest.mark.slow
def test_compile_through_the_cli(run_cli, tiny_gen_args, tmp_path):
    out = tmp_path / "c.png"
    res = run_cli("gen", PROMPTS[0], *tiny_gen_args, "--decoder", "embeds", "--compile", "--out", out)
    assert res.code == 0, res.stderr
    assert json.loads(out.with_suffix(".json").read_text())["compiled"] is True
