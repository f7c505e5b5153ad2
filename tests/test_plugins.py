"""Plugins: built-ins via entry points; test plugins registered in-process by the same path.

The one end-to-end `pip install` of a plugin package is `tests/test_example_plugin.py`.
"""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import pytest
from PIL import Image

from ovi_cli import plugins as plugin_manager
from ovi_cli.plugins import load_registry, set_registry
from tests.helpers import plugin_broken, plugin_flat


def test_builtins_load_through_entry_points():
    reg = load_registry()
    for kind, name in (("prior", "ovi"), ("prior", "textemb"), ("decoder", "kandinsky22"),
                       ("decoder", "embeds"), ("decoder", "toy"), ("model", "toy")):
        entry = reg.entries[kind][name]
        assert entry.package == "ovi"
    assert reg.manager is not None
    assert any(name.startswith("ovi:") for name, _ in reg.manager.list_name_plugin())
    assert reg.failures == []


@pytest.fixture
def test_plugins(monkeypatch):
    """The flat decoder and two broken plugins, as the process-wide registry for this test."""
    broken_import = EntryPoint(name="unimportable", value="tests.helpers.plugin_import_error", group="ovi")
    entry_points = plugin_manager._entry_points()
    monkeypatch.setattr(plugin_manager, "_entry_points", lambda: [*entry_points, broken_import])
    set_registry(load_registry(extra=[("flat", plugin_flat), ("broken", plugin_broken)]))
    yield
    set_registry(None)


def test_in_process_plugin_is_listed_and_broken_ones_reported(test_plugins, run_cli):
    res = run_cli("plugins", "--json")
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    flat = [p for p in data["plugins"] if p["name"] == "flat"]
    assert flat and flat[0]["kind"] == "decoder" and flat[0]["package"] == "<in-process>"
    failures = {f["plugin"]: f["error"] for f in data["failures"]}
    assert "broken on purpose" in failures["broken"]  # the register hook raised
    assert "cannot be imported" in failures["unimportable"]  # the entry point's import failed
    assert any(p["name"] == "ovi" and p["kind"] == "prior" for p in data["plugins"])  # the rest works
    res = run_cli("plugins")
    assert res.code == 0 and "broken" in res.stdout and "unimportable" in res.stdout


def test_in_process_decoder_used_from_the_cli(test_plugins, run_cli, tiny_gen_args, tmp_path):
    out = tmp_path / "flat.png"
    res = run_cli("gen", "a flat thing", *tiny_gen_args, "--decoder", "flat", "--out", out)
    assert res.code == 0, res.stderr
    with Image.open(out) as im:
        assert im.size == (32, 32)
        assert len(set(im.getdata())) == 1


def test_unknown_name_points_at_the_failed_plugin(test_plugins, run_cli):
    res = run_cli("gen", "x", "--decoder", "nope", "--device", "cpu")
    assert res.code == 2
    assert "unknown decoder 'nope'" in res.stderr and "flat" in res.stderr and "failed to load" in res.stderr
