"""Decoders in other CLIP spaces, each bringing its encoder family: SD 2.1 unCLIP (OpenCLIP ViT-H-14, the `clip`
family) and SDXL + IP-Adapter (ViT-bigG-14, the Kandinsky encoders), on tiny random models in the real repos'
layouts, decoded end to end by the real diffusers pipelines; stores and constraints in each space."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import tiny_decoders, tiny_models

FAST = ["--height", "32", "--width", "32", "--decoder-steps", "2", "--steps", "10", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def spaces(tmp_path_factory):
    root = tmp_path_factory.mktemp("spaces")
    clip = tiny_decoders.make_vit_h_clip(root / "CLIP-ViT-H-14")
    sdxl = tiny_decoders.make_sdxl_repo(root / "sdxl")
    return {"clip": clip, "unclip": tiny_decoders.make_unclip_repo(root / "unclip", clip), "sdxl": sdxl,
            "ip": tiny_decoders.make_ip_adapter_repo(root / "IP-Adapter", sdxl)}


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_the_clip_family_splits_a_clip_model_folder(spaces):
    from ovi_cli.encoders import Encoders

    enc = Encoders.load(str(spaces["clip"]), family="clip")
    assert enc.family == "clip" and enc.embed_dim == tiny_decoders.VIT_H_DIM
    assert enc.encode_text(["a red circle"]).text_embeds.shape == (1, tiny_decoders.VIT_H_DIM)
    assert enc.encode_images([Image.new("RGB", (40, 40))]).shape == (1, tiny_decoders.VIT_H_DIM)
    from transformers import CLIPModel

    whole = CLIPModel.from_pretrained(spaces["clip"])  # the towers are the CLIPModel's own
    ids = enc.tokenize(["a red circle"])[0]
    feats = whole.get_text_features(**ids)
    feats = getattr(feats, "pooler_output", feats)  # transformers 5 may wrap the projected features
    assert np.allclose(feats.detach().numpy(), enc.encode_text(["a red circle"]).text_embeds.numpy(), atol=1e-5)


def test_the_unclip_repos_own_image_encoder_is_the_same_space(spaces):
    from ovi_cli.api import PluginContext
    from ovi_cli.plugins import get_registry
    from ovi_cli.settings import GenSettings

    family = get_registry().get("encoder_family", "clip")
    ctx = PluginContext(name="clip", settings=GenSettings(encoder_model=str(spaces["clip"])), device="cpu",
                        options={"vision": str(spaces["unclip"])})
    import torch

    ctx.device = torch.device("cpu")
    enc = family(ctx).load_encoders(str(spaces["clip"]))
    from ovi_cli.encoders import Encoders

    assert enc.fingerprint() == Encoders.load(str(spaces["clip"]), family="clip").fingerprint()
    assert [r.source for r in family(ctx).required_models()] == [str(spaces["clip"]), str(spaces["unclip"])]


def test_sd21_unclip_decodes_ovi_in_vit_h_space_with_its_own_store(run_cli, spaces, image_folder, tmp_path):
    store = tmp_path / "vit-h-store"
    res = run_cli("build-stats", str(image_folder), "--model", "sd21-unclip", "--encoder-model", str(spaces["clip"]),
                  "--out", str(store), "--quiet")
    assert res.code == 0, res.stderr
    out = tmp_path / "u.png"
    res = run_cli("gen", "a red circle", "--model", "sd21-unclip", "--encoder-model", str(spaces["clip"]),
                  "--decoder-model", str(spaces["unclip"]), *FAST, "-c", "mahalanobis", "--stats", str(store),
                  "--option", "sd21-unclip.noise_level=10", "--out", str(out))
    assert res.code == 0, res.stderr
    assert Image.open(out).size == (32, 32)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["models"]["encoder"]["family"] == "clip"
    assert side["models"]["stats"]["encoder"]["fingerprint"] == side["models"]["encoder"]["fingerprint"]
    assert side["options"]["sd21-unclip"] == {"noise_level": 10, "prompt": True}
    assert json.loads(Image.open(out).text["ovi"])["settings"]["encoder_family"] == "clip"

    # the ViT-H store in the bigG space (the Kandinsky encoders): refused, naming both
    res = run_cli("gen", "a red circle", "--encoder-model", str(_kandinsky_repo(tmp_path)), "--decoder", "embeds",
                  *FAST, "-c", "mahalanobis", "--stats", str(store), "--out", str(tmp_path / "k.png"))
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1
    assert str(spaces["clip"]) in res.stderr and str(_kandinsky_repo(tmp_path)) in res.stderr


def _kandinsky_repo(tmp_path):
    path = tmp_path / "kandinsky-prior"
    if not path.exists():
        tiny_models.make_encoder_repo(path)
    return path


def test_a_decoder_of_another_space_needs_its_family(run_cli, spaces, encoder_repo, tmp_path):
    res = run_cli("gen", "a red circle", "--encoder-model", str(encoder_repo), "--decoder", "sd21-unclip",
                  "--decoder-model", str(spaces["unclip"]), *FAST, "--out", str(tmp_path / "x.png"))
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "encoder family 'clip'" in res.stderr and "--model sd21-unclip" in res.stderr


def test_sdxl_ip_adapter_decodes_ovi_in_the_kandinsky_space(run_cli, spaces, encoder_repo, image_folder, tmp_path):
    store = tmp_path / "bigG-store"  # a store of the Kandinsky encoders serves SDXL + IP-Adapter as it is
    assert run_cli("build-stats", str(image_folder), "--encoder-model", str(encoder_repo), "--out", str(store),
                   "--quiet").code == 0
    out = tmp_path / "x.png"
    common = ["--model", "sdxl-ip-adapter", "--encoder-model", str(encoder_repo), "--decoder-model",
              str(spaces["sdxl"]), "--option", f"sdxl-ip-adapter.adapter={spaces['ip']}", *FAST]
    res = run_cli("gen", "a red circle", *common, "--option", "sdxl-ip-adapter.scale=0.7", "-c", "mahalanobis",
                  "--stats", str(store), "--out", str(out))
    assert res.code == 0, res.stderr
    assert Image.open(out).size == (32, 32)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["models"]["decoder"]["pipeline"] == "StableDiffusionXLPipeline"
    assert side["options"]["sdxl-ip-adapter"]["scale"] == 0.7
    blank = tmp_path / "blank.png"
    res = run_cli("gen", "a red circle", *common, "--option", "sdxl-ip-adapter.prompt=false", "--out", str(blank))
    assert res.code == 0, res.stderr
    assert np.asarray(Image.open(blank)).tolist() != np.asarray(Image.open(out)).tolist()
    # text blanked: the image embedding alone conditions (another prompt's embedding, another image) ...
    other = tmp_path / "other.png"
    res = run_cli("gen", "a blue square", *common, "--option", "sdxl-ip-adapter.prompt=false", "--out", str(other))
    assert res.code == 0, res.stderr
    assert np.asarray(Image.open(other)).tolist() != np.asarray(Image.open(blank)).tolist()
    # ... through the adapter: at scale 0 the embedding no longer matters
    zero = [tmp_path / "z1.png", tmp_path / "z2.png"]
    for prompt, path in zip(("a red circle", "a blue square"), zero):
        res = run_cli("gen", prompt, *common, "--option", "sdxl-ip-adapter.prompt=false", "--option",
                      "sdxl-ip-adapter.scale=0", "--out", str(path))
        assert res.code == 0, res.stderr
    assert np.asarray(Image.open(zero[0])).tolist() == np.asarray(Image.open(zero[1])).tolist()


def test_the_ip_adapter_file_has_the_official_keys_and_is_what_diffusers_loads(spaces):
    from safetensors.torch import load_file

    keys = set(load_file(spaces["ip"] / "sdxl_models" / "ip-adapter_sdxl.safetensors"))
    assert {"image_proj.proj.weight", "image_proj.proj.bias", "image_proj.norm.weight", "image_proj.norm.bias"} <= keys
    numbers = sorted({int(k.split(".")[1]) for k in keys if k.startswith("ip_adapter.")})
    assert numbers[0] == 1 and all(n % 2 == 1 for n in numbers)
    assert all(f"ip_adapter.{n}.to_v_ip.weight" in keys for n in numbers)


def test_encoder_family_flag_and_the_clip_vision_option(run_cli, spaces, tmp_path):
    out = tmp_path / "e.png"
    res = run_cli("gen", "a red circle", "--encoder-family", "clip", "--encoder-model", str(spaces["clip"]),
                  "--option", f"clip.vision={spaces['unclip']}", "--decoder", "embeds", *FAST, "--out", str(out))
    assert res.code == 0, res.stderr
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["settings"]["encoder_family"] == "clip" and side["options"]["clip"] == {"vision": str(spaces["unclip"])}
    res = run_cli("gen", "a red circle", "--encoder-family", "clip", "--encoder-model", str(spaces["clip"]),
                  "--option", f"clip.vision={tmp_path / 'gone'}", "--decoder", "embeds", *FAST, "--out", str(out))
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1 and "--option clip.vision" in res.stderr
    res = run_cli("gen", "a red circle", "--encoder-family", "clip", "--encoder-model", str(spaces["unclip"]),
                  "--decoder", "embeds", *FAST, "--out", str(out))  # a diffusers repo is no CLIP model folder
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1 and "CLIP" in res.stderr
