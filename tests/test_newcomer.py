"""What a new user tripped over (issue 10, item 10), each checked the way they met it: through the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from ovi_cli.cli import cli_command
from ovi_cli.pipeline import truncation_warning


def _walk(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))


def _one_line_error(res) -> str:
    assert res.code == 2, (res.code, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    return lines[0]


# ---- --help ----------------------------------------------------------------------------------
def test_no_flag_shows_a_value_type_in_any_help(run_cli):
    """Typer 0.29's Rich help printed `<bool>` beside every on/off flag, as if it took a value."""
    paths = [p for p, _ in _walk(cli_command())]
    assert ("toy", "train") in paths and ("gen",) in paths  # plugin commands are walked too
    for path in paths:
        res = run_cli(*path, "--help")
        assert res.code == 0, (path, res.stderr)
        assert "<bool>" not in res.stdout, path
    res = run_cli("gen", "--help")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^│ +(--[a-z-]+)[^│]*", res.stdout, re.MULTILINE)}
    assert "<" not in rows["--quiet"] and "<" not in rows["--help"] and "<" not in rows["--save-embedding"]
    assert "<int>" in rows["--steps"]  # options that take a value still say which
    assert "NAME[:WEIGHT]" in res.stdout and "list[str]" not in res.stdout


def test_gen_help_names_the_toy_decoder_and_what_out_writes(run_cli):
    text = " ".join(run_cli("gen", "--help").stdout.replace("│", " ").split())
    decoder = text[text.index("--decoder "):][:200]
    assert "toy" in decoder and "kandinsky22" in decoder and "embeds" in decoder
    out = text[text.index("--out "):][:200]
    assert ".png" in out and ".json" in out and "safetensors" not in out


# ---- first runs ------------------------------------------------------------------------------
def test_bare_gen_says_what_to_give(run_cli):
    line = _one_line_error(run_cli("gen"))
    assert line == "ovi: error: give a PROMPT (in quotes) or --prompts FILE with one prompt per line"


@pytest.mark.parametrize("name", ["pic.jpg", "pic.JPEG", "pic.webp"])
def test_out_with_another_image_format_is_refused_before_loading(run_cli, tmp_path, name):
    line = _one_line_error(run_cli("gen", "a red circle", "--model", "toy", "-o", tmp_path / name))
    assert "PNG" in line and ".png" in line
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_every_missing_model_once_and_points_at_toy(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    line = _one_line_error(run_cli("gen", "a red circle", "--device", "cpu"))
    for needle in ("kandinsky-community/kandinsky-2-2-prior", "kandinsky-community/kandinsky-2-2-decoder",
                   "--encoder-model", "--decoder-model", "--model toy"):
        assert line.count(needle) == 1, (needle, line)


# ---- the toy world -----------------------------------------------------------------------------
def test_toy_sidecar_records_only_what_the_toy_decoder_uses(run_cli, tmp_path):
    out = tmp_path / "c.png"
    res = run_cli("gen", "a red circle", "--model", "toy", "--steps", "5", "--out", out, "-q")
    assert res.code == 0, res.stderr
    assert json.loads(out.with_suffix(".json").read_text())["decoding"] == {"height": 64, "width": 64}


def test_kandinsky_sidecar_records_its_steps_and_guidance(run_cli, tiny_gen_args, tmp_path):
    out = tmp_path / "k.png"
    res = run_cli("gen", "a dog", *tiny_gen_args, "--steps", "2", "--out", out)
    assert res.code == 0, res.stderr
    decoding = json.loads(out.with_suffix(".json").read_text())["decoding"]
    assert decoding == {"height": 32, "width": 32, "steps": 2, "guidance_scale": 4.0}


def test_unknown_toy_words_warn_once_and_known_ones_do_not(run_cli, tmp_path):
    res = run_cli("gen", "a cat riding a bicycle", "--model", "toy", "--steps", "5", "-o", tmp_path / "c.png", "-q")
    assert res.code == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1, res.stderr
    assert "'cat', 'riding', 'bicycle'" in warnings[0] and "circle" in warnings[0]
    assert "'a'" not in warnings[0]
    res = run_cli("gen", "a small red star on the left", "--model", "toy", "--steps", "5", "-o",
                  tmp_path / "s.png", "-q")
    assert res.code == 0 and res.stderr == ""


def test_unicode_toy_prompt_says_why_three_words_are_many_tokens(run_cli, tmp_path):
    res = run_cli("compare", "café crème brûlée", "--model", "toy", "--priors", "textemb,ovi", "--steps", "5",
                  "-o", tmp_path / "cmp", "-q")
    assert res.code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    # one line each, although two priors encode the prompt
    assert len(lines) == 2, res.stderr
    assert "'café', 'crème', 'brûlée'" in lines[0]
    assert lines[1] == "ovi: warning: " + truncation_warning("café crème brûlée", 21, 16)


def test_truncation_warning_text():
    assert truncation_warning("word " * 3, 90, 77) == (
        "prompt 'word word word ' truncated: it is 90 tokens and the text encoder reads 77 "
        "(start and end tokens and word pieces count)")
    long = "x" * 100
    assert f"'{'x' * 57}...'" in truncation_warning(long, 100, 77)


def test_compare_and_build_stats_take_the_toy_preset_and_its_one_thread(run_cli, tmp_path):
    torch.set_num_threads(2)  # the conftest fixture restores the count afterwards
    res = run_cli("compare", "a red circle", "--model", "toy", "--priors", "textemb,ovi,toy-prior",
                  "--steps", "5", "-o", tmp_path / "cmp", "-q")
    assert res.code == 0, res.stderr
    assert torch.get_num_threads() == 1  # ModelPreset.activate ran: compare is not 18x slower
    with Image.open(tmp_path / "cmp" / "grid.png") as grid:
        assert grid.size[0] == 3 * 64
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (64, 64), colour).save(images / f"{i}.png")
    torch.set_num_threads(2)
    res = run_cli("build-stats", images, "--model", "toy", "--out", tmp_path / "store", "--workers", "0", "-q",
                  "--json")
    assert res.code == 0, res.stderr
    assert torch.get_num_threads() == 1
    info = json.loads(res.stdout)
    assert info["count"] == 3 and info["dim"] == 64 and info["encoder"]["source"].endswith("prior")
