"""`ovi gen` end to end on tiny random models saved in the real hub layouts."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ovi_cli.losses import cosine


def test_gen_writes_png_of_asked_size_and_consistent_sidecar(run_cli, tiny_gen_args, tmp_path, encoders):
    out = tmp_path / "car.png"
    res = run_cli("gen", "blue old car on a beach", *tiny_gen_args, "--height", "48", "--width", "64",
                  "--out", out, "--save-embedding", "--seed", "3")
    assert res.code == 0, res.stderr
    with Image.open(out) as im:
        assert im.size == (64, 48)
        assert im.format == "PNG"
    side = json.loads(out.with_suffix(".json").read_text())
    for key in ("prompt", "prior", "constraints", "tokens", "steps", "lr", "seed", "text_cosine",
                "embedding_norm", "timings", "models", "versions", "history"):
        assert key in side, key
    assert side["prompt"] == "blue old car on a beach"
    assert side["prior"] == "ovi" and side["tokens"] == 6 and side["steps"] == 20 and side["seed"] == 3
    assert len(side["history"]["text_cosine"]) == 20
    assert side["timings"]["prior_s"] > 0 and side["timings"]["decode_s"] > 0
    assert side["versions"]["torch"] == torch.__version__

    tensors = load_file(out.with_suffix(".safetensors"))
    assert set(tensors) >= {"image_embeds", "negative_image_embeds"}
    emb = tensors["image_embeds"]
    text = encoders.encode_text(["blue old car on a beach"]).text_embeds
    assert side["text_cosine"] == pytest.approx(float(cosine(emb, text)[0]), abs=1e-6)
    assert side["embedding_norm"] == pytest.approx(float(emb.norm()), rel=1e-6)
    # the default negative is the embedding of a mean-grey (all-zero normalised) image
    assert torch.allclose(tensors["negative_image_embeds"], encoders.zero_image_embeds(), atol=1e-6)


def test_textemb_prior_passes_the_text_embedding_through_exactly(run_cli, tiny_gen_args, tmp_path, encoders):
    out = tmp_path / "t.png"
    res = run_cli("gen", "a red cube", *tiny_gen_args, "--prior", "textemb", "--decoder", "embeds",
                  "--out", out)
    assert res.code == 0, res.stderr
    emb = load_file(out.with_suffix(".safetensors"))["image_embeds"]
    assert torch.equal(emb, encoders.encode_text(["a red cube"]).text_embeds)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["text_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert not out.exists(), "the embeds decoder writes no image"


def test_negative_zeros_and_json_on_stdout(run_cli, tiny_gen_args, tmp_path):
    out = tmp_path / "z.png"
    res = run_cli("gen", "a cat", *tiny_gen_args, "--negative", "zeros", "--decoder", "embeds",
                  "--out", out, "--json")
    assert res.code == 0, res.stderr
    side = json.loads(res.stdout.strip().splitlines()[-1])
    assert side["negative"] == "zeros"
    neg = load_file(out.with_suffix(".safetensors"))["negative_image_embeds"]
    assert torch.count_nonzero(neg) == 0


def test_long_prompt_is_truncated_with_one_warning(run_cli, tiny_gen_args, tmp_path):
    res = run_cli("gen", "word " * 100, *tiny_gen_args, "--decoder", "embeds", "--out", tmp_path / "l.png")
    assert res.code == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if "truncated" in ln]
    assert len(warnings) == 1
    assert json.loads((tmp_path / "l.json").read_text())["truncated"] is True


def _one_line_error(res) -> str:
    assert res.code != 0
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ovi: error:")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["gen", "   "], "empty prompt"),
        (["gen", "x", "--tokens", "abc"], "--tokens"),
        (["gen", "x", "--tokens", "0"], "--tokens"),
        (["gen", "x", "--steps", "-1"], "--steps"),
        (["gen", "x", "--device", "cuda"], "CUDA"),
        (["gen", "x", "--device", "tpu"], "device"),
        (["gen", "x", "--dtype", "float8"], "dtype"),
        (["gen", "x", "--negative", "black"], "--negative"),
        (["gen", "x", "--prior", "nope"], "unknown prior 'nope'"),
        (["gen", "x", "--decoder", "nope"], "unknown decoder 'nope'"),
        (["gen", "x", "--bogus-flag"], "bogus"),
    ],
)
def test_user_errors_are_one_line(run_cli, args, needle, monkeypatch):
    if needle == "CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli(*args, "--device", "cpu") if "--device" not in args else run_cli(*args)
    assert needle in _one_line_error(res)


def test_missing_model_folder_is_one_line(run_cli, tmp_path, decoder_repo):
    res = run_cli("gen", "x", "--encoder-model", tmp_path / "nowhere", "--decoder-model", decoder_repo,
                  "--device", "cpu")
    assert "does not exist" in _one_line_error(res)


def test_folder_without_the_layout_is_one_line(run_cli, tmp_path, decoder_repo):
    (tmp_path / "half" / "text_encoder").mkdir(parents=True)
    res = run_cli("gen", "x", "--encoder-model", tmp_path / "half", "--decoder-model", decoder_repo,
                  "--device", "cpu")
    assert "image_encoder" in _one_line_error(res)


def test_hub_id_offline_is_one_line_with_advice(run_cli, tmp_path, monkeypatch, decoder_repo):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    res = run_cli("gen", "x", "--encoder-model", "kandinsky-community/kandinsky-2-2-prior",
                  "--decoder-model", decoder_repo, "--device", "cpu")
    line = _one_line_error(res)
    assert "HF_HUB_OFFLINE" in line and "--encoder-model" in line


def test_failed_run_leaves_no_files(encoder_repo, decoder_repo, tmp_path):
    from ovi_cli.api import Reporter
    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.settings import GenSettings

    class Interrupt(Reporter):
        def decode_progress(self, step, total):
            raise KeyboardInterrupt

    settings = GenSettings(encoder_model=str(encoder_repo), decoder_model=str(decoder_repo), steps=3,
                           height=32, width=32, decoder_steps=2, device="cpu")
    pipe = OviPipeline(settings, reporter=Interrupt())
    with pytest.raises(KeyboardInterrupt):
        pipe.generate(["a dog"], [tmp_path / "dog.png"], save_embedding=True)
    assert list(tmp_path.iterdir()) == []


def test_help_lists_the_commands(run_cli):
    res = run_cli("--help")
    assert res.code == 0
    for cmd in ("gen", "build-stats", "plugins"):
        assert cmd in res.stdout
    res = run_cli("gen", "--help")
    for flag in ("--tokens", "--steps", "--lr", "--weight-decay", "--seed", "--prior", "--decoder",
                 "--encoder-model", "--decoder-model", "--negative", "--save-embedding", "--json",
                 "--quiet", "--device", "--dtype", "--height", "--width", "--decoder-steps",
                 "--guidance-scale"):
        assert flag in res.stdout, flag
