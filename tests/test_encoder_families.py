"""The encoder-family seam: built-ins through entry points, a third-party family by the same path, the family
a run names is the one that loads its towers, and `Encoders.load(source)` stays the default family's loader."""

from __future__ import annotations

import shutil

import pytest
import torch

from ovi_cli.errors import OviError


def test_builtin_families_are_registered_through_entry_points():
    from ovi_cli.plugins import get_registry

    reg = get_registry()
    assert {"kandinsky22-prior", "clip"} <= set(reg.names("encoder_family"))
    assert reg.entries["encoder_family"]["clip"].plugin == "encoder_families"


def test_encoders_load_is_the_default_family(encoders):
    assert encoders.family == "kandinsky22-prior"
    assert encoders.describe()["family"] == "kandinsky22-prior"


def test_a_third_party_family_loads_the_towers_of_a_run(encoder_repo, tmp_path):
    from ovi_cli.pipeline import OviPipeline
    from ovi_cli.plugins import get_registry, load_registry, set_registry
    from ovi_cli.settings import GenSettings
    from tests.helpers import plugin_encoder_family

    flat = tmp_path / "flat"
    shutil.copytree(encoder_repo / "text_encoder", flat / "text")
    shutil.copytree(encoder_repo / "tokenizer", flat / "text", dirs_exist_ok=True)
    shutil.copytree(encoder_repo / "image_encoder", flat / "vision")
    shutil.copytree(encoder_repo / "image_processor", flat / "vision", dirs_exist_ok=True)
    before = get_registry()
    reg = load_registry(extra=[("flat", plugin_encoder_family)])
    set_registry(reg)
    try:
        settings = GenSettings(encoder_model=str(flat), encoder_family="flat-towers", decoder="embeds", steps=5,
                               device="cpu")
        pipe = OviPipeline(settings, registry=reg)
        assert [(r.source, r.subfolders) for r in pipe.required_models()] == [(str(flat), ("text", "vision"))]
        ours = pipe.embed(["a red circle"], [0])
        assert pipe.encoders.family == "flat-towers"
        default = OviPipeline(GenSettings(encoder_model=str(encoder_repo), decoder="embeds", steps=5, device="cpu"),
                              registry=reg)
        theirs = default.embed(["a red circle"], [0])
        assert torch.equal(ours.image_embeds, theirs.image_embeds)  # the same towers, whatever loaded them
        # stores are tied to the space (the vision tower's fingerprint), not to the layout it was read from
        assert pipe.encoders.fingerprint() == default.encoders.fingerprint()
        with pytest.raises(OviError, match="unknown encoder_family 'nope'"):
            OviPipeline(GenSettings(encoder_family="nope"), registry=reg)
    finally:
        set_registry(before)


def test_ovi_plugins_lists_the_new_decoders_presets_and_families_with_options(run_cli):
    import json

    res = run_cli("plugins", "--json")
    assert res.code == 0, res.stderr
    rows = {(p["kind"], p["name"]): p for p in json.loads(res.stdout)["plugins"]}
    for decoder in ("kandinsky22-img2img", "kandinsky22-inpaint", "kandinsky22-controlnet", "sd21-unclip",
                    "sdxl-ip-adapter"):
        assert rows[("decoder", decoder)]["options"], decoder
    assert ("model", "sd21-unclip") in rows and ("model", "sdxl-ip-adapter") in rows
    assert [o["key"] for o in rows[("decoder", "kandinsky22-img2img")]["options"]] == ["image", "strength"]
    assert [o["key"] for o in rows[("encoder_family", "clip")]["options"]] == ["vision"]
    listed = run_cli("plugins", "--options")
    assert listed.code == 0 and "sdxl-ip-adapter" in listed.stdout and "noise_level" in listed.stdout
