"""Plugins: built-ins via entry points, a third-party package installed and used from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ovi_cli.plugins import load_registry, set_registry

PKG = Path(__file__).parent / "plugin_pkg"


def test_builtins_load_through_entry_points():
    reg = load_registry()
    for kind, name in (("prior", "ovi"), ("prior", "textemb"), ("decoder", "kandinsky22"),
                       ("decoder", "embeds")):
        entry = reg.entries[kind][name]
        assert entry.package == "ovi"
    assert reg.manager is not None
    assert any(name.startswith("ovi:") for name, _ in reg.manager.list_name_plugin())


@pytest.fixture(scope="module")
def installed_plugin():
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(PKG)],
        check=True, capture_output=True,
    )
    set_registry(None)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "ovi-test-plugin"],
                   check=False, capture_output=True)
    set_registry(None)


def test_third_party_plugin_is_listed_and_broken_one_reported(installed_plugin, run_cli):
    res = run_cli("plugins", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    flat = [p for p in data["plugins"] if p["name"] == "flat"]
    assert flat and flat[0]["kind"] == "decoder" and flat[0]["package"] == "ovi-test-plugin"
    assert flat[0]["version"] == "0.3.1"
    assert any(f["plugin"] == "broken" and "broken on purpose" in f["error"] for f in data["failures"])
    res = run_cli("plugins")
    assert res.code == 0 and "broken" in res.stdout


def test_third_party_decoder_used_from_the_cli(installed_plugin, run_cli, tiny_gen_args, tmp_path):
    out = tmp_path / "flat.png"
    res = run_cli("gen", "a flat thing", *tiny_gen_args, "--decoder", "flat", "--out", out)
    assert res.code == 0, res.stderr
    with Image.open(out) as im:
        assert im.size == (32, 32)
        assert len(set(im.getdata())) == 1
