"""Plugin-owned options (`--option PLUGIN.KEY=VALUE`) and model presets (`--model NAME`)."""

from __future__ import annotations

import json
import math

import pytest

from ovi_cli.api import PluginOption, parse_option_assignments, resolve_options
from ovi_cli.errors import OviError


class _Declares:
    options = (
        PluginOption("k", int, 1, "neighbours", minimum=1),
        PluginOption("scale", float, 0.5, "a scale", minimum=0),
        PluginOption("mode", str, "a", "a mode", choices=("a", "b")),
        PluginOption("fast", bool, False, "a switch"),
    )


@pytest.mark.parametrize("text, expected", [
    ("3", 3), (" 7 ", 7), (4, 4), (4.0, 4),
])
def test_int_options_parse(text, expected):
    assert resolve_options(_Declares, "p", {"k": text})["k"] == expected


@pytest.mark.parametrize("key, value, message", [
    ("k", "0", "--option p.k must be >= 1"),
    ("k", "1.5", "not a valid int"),
    ("k", 2.5, "not a valid int"),
    ("k", True, "not a valid int"),
    ("scale", "nan", "not a valid float"),
    ("scale", "inf", "not a valid float"),
    ("scale", "-1", "must be >= 0"),
    ("mode", "c", "must be one of a, b"),
    ("fast", "maybe", "not a valid bool"),
    ("nope", "1", "'p' has no option 'nope' \\(its options: p.k, p.scale, p.mode, p.fast\\)"),
])
def test_bad_option_values_are_one_line_errors(key, value, message):
    with pytest.raises(OviError, match=message):
        resolve_options(_Declares, "p", {key: value})


def test_defaults_apply_and_given_values_win():
    assert resolve_options(_Declares, "p", None) == {"k": 1, "scale": 0.5, "mode": "a", "fast": False}
    got = resolve_options(_Declares, "p", {"scale": "0.25", "fast": "yes", "mode": "b"})
    assert got == {"k": 1, "scale": 0.25, "mode": "b", "fast": True}
    assert math.isclose(got["scale"], 0.25)


def test_assignments_parse_by_plugin():
    assert parse_option_assignments(["nn.k=5", "eclipse.model=a=b", "nn.every=2"]) == {
        "nn": {"k": "5", "every": "2"}, "eclipse": {"model": "a=b"}}
    for bad in ("nn.k", "k=5", ".k=5", "nn.=5"):
        with pytest.raises(OviError, match="malformed --option"):
            parse_option_assignments([bad])


def test_gen_records_resolved_options_and_alias_equals_option(run_cli, tmp_path):
    """`--nn-k 2` is `--option nn.k=2`; the sidecar records the resolved options of what ran."""
    outs = {}
    for label, extra in (("alias", ["--nn-k", "2"]), ("option", ["--option", "nn.k=2"])):
        out = tmp_path / f"{label}.png"
        res = run_cli("gen", "a red circle", "--model", "toy", "-c", "nn", "--steps", "3", "--decoder", "embeds",
                      "--out", out, "--quiet", "--device", "cpu", *extra)
        assert res.code == 0, res.stderr
        outs[label] = json.loads(out.with_suffix(".json").read_text())
    for sc in outs.values():
        assert sc["options"]["nn"] == {"k": 2, "every": 1, "search": "auto"}
        assert len(sc["constraint_values"]["nn"]["neighbours"]) == 2
    assert outs["alias"]["text_cosine"] == outs["option"]["text_cosine"]


def test_model_preset_applies_to_compare_and_build_stats(run_cli, tmp_path):
    res = run_cli("compare", "a red circle", "--model", "toy", "--priors", "textemb,ovi,toy-prior",
                  "--steps", "3", "--out", tmp_path / "cmp", "--quiet", "--device", "cpu")
    assert res.code == 0, res.stderr
    table = json.loads((tmp_path / "cmp" / "table.json").read_text())
    assert table["priors"] == ["textemb", "ovi", "toy-prior"]
    assert (tmp_path / "cmp" / "grid.png").is_file()
    # trained priors are OVI's references in compare (a property of the prior, not a list in core)
    assert "cos_toy-prior" in (tmp_path / "cmp" / "table.csv").read_text()

    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 10, 200 - 30 * i)).save(images / f"{i}.png")
    res = run_cli("build-stats", images, "--model", "toy", "--out", tmp_path / "store", "--workers", "0",
                  "--quiet", "--json")
    assert res.code == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["count"] == 6 and info["encoder"]["source"].endswith("models/prior")


def test_unknown_model_preset_lists_the_known_ones(run_cli, tmp_path):
    res = run_cli("gen", "x", "--model", "nope", "--out", tmp_path / "x.png")
    assert res.code == 2 and res.stderr == ("ovi: error: unknown model 'nope'; available: sd21-unclip, "
                                            "sdxl-ip-adapter, toy (see `ovi plugins`)\n")
