"""The plugin author's manual's example packages (examples/): each pip-installed into this environment and
run from the CLI, each written only against ovi's public plugin contract.

The constraint example has its own, deeper test (tests/test_example_plugin.py).
"""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_cli.plugins import set_registry

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# what a plugin package may import from ovi: the plugin contract and the one-line error
PUBLIC = {"ovi_cli", "ovi_cli.api", "ovi_cli.errors", "ovi_cli.hub"}


def _install(tmp_path_factory, folder: str, dist: str):
    src = tmp_path_factory.mktemp("example") / folder
    shutil.copytree(EXAMPLES / folder, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    importlib.invalidate_caches()
    set_registry(None)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", dist], check=False, capture_output=True)
    importlib.invalidate_caches()
    set_registry(None)


@pytest.fixture(scope="module")
def flat_decoder(tmp_path_factory):
    yield from _install(tmp_path_factory, "ovi-flat-decoder", "ovi-flat-decoder")


@pytest.fixture(scope="module")
def colourfulness_scorer(tmp_path_factory):
    yield from _install(tmp_path_factory, "ovi-colourfulness-scorer", "ovi-colourfulness-scorer")


def test_every_example_uses_only_the_public_contract():
    packages = sorted(p for p in EXAMPLES.iterdir() if (p / "pyproject.toml").is_file())
    assert {p.name for p in packages} >= {"ovi-norm-constraint", "ovi-flat-decoder", "ovi-colourfulness-scorer"}
    for package in packages:
        for path in package.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                private = [n for n in names if n.split(".")[0] in ("ovi_cli", "ovi_plugins", "ovi_stats")
                           and n not in PUBLIC]
                assert not private, f"{path.relative_to(EXAMPLES)} imports {private}: not the public contract"


def test_flat_decoder_example_from_the_cli(flat_decoder, run_cli, tmp_path):
    res = run_cli("plugins", "--json")
    rows = [p for p in json.loads(res.stdout)["plugins"] if p["name"] == "flat"]
    assert rows and rows[0]["kind"] == "decoder" and rows[0]["package"] == "ovi-flat-decoder"
    images = {}
    for mode in ("flat", "gradient"):
        out = tmp_path / f"{mode}.png"
        res = run_cli("gen", "a red circle", "--model", "toy", "--steps", "5", "--decoder", "flat",
                      "--option", f"flat.mode={mode}", "--height", "24", "--width", "16", "-o", out, "-q")
        assert res.code == 0, res.stderr
        side = json.loads(out.with_suffix(".json").read_text())
        assert side["decoder"] == "flat" and side["decoding"] == {"height": 24, "width": 16}
        images[mode] = np.asarray(Image.open(out).convert("RGB"))
        assert images[mode].shape == (24, 16, 3)
    assert len({tuple(px) for px in images["flat"].reshape(-1, 3)}) == 1  # one colour
    assert (images["gradient"][0] != images["gradient"][-1]).any()  # two colours, top and bottom
    res = run_cli("gen", "a red circle", "--model", "toy", "--decoder", "flat", "--option", "flat.mode=wavy",
                  "-o", tmp_path / "bad.png", "-q")
    assert res.code == 2 and "--option flat.mode must be one of flat, gradient" in res.stderr
    assert not (tmp_path / "bad.png").exists()


def test_colourfulness_scorer_example_from_the_cli(colourfulness_scorer, run_cli, tmp_path):
    run = tmp_path / "run"
    samples = run / "shape" / "samples"
    samples.mkdir(parents=True)
    grey = np.full((8, 8, 3), 128, dtype=np.uint8)
    stripes = np.zeros((8, 8, 3), dtype=np.uint8)
    stripes[::2, :, 0] = 255
    stripes[1::2, :, 2] = 255
    Image.fromarray(grey).save(samples / "a grey square_000000.png")
    Image.fromarray(stripes).save(samples / "a striped square_000001.png")
    (run / "bench.json").write_text(json.dumps({"benchmark": "mine", "settings": {"prior": "ovi"},
                                                "categories": ["shape"]}))
    res = run_cli("bench", "score", run, "--scorers", "colourfulness", "--option", "colourfulness.scale=2", "-q")
    assert res.code == 0, res.stderr
    rows = [json.loads(line) for line in (run / "shape" / "scores" / "colourfulness.jsonl").read_text().splitlines()
            if '"score"' in line]
    scores = {r["image"]: r["score"] for r in rows}
    assert scores["a grey square_000000.png"] == 0.0  # no colour at all
    rgb = stripes.astype(np.float64)
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    expected = 2 * (np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    assert scores["a striped square_000001.png"] == pytest.approx(expected, rel=1e-12)
    doc = json.loads((run / "scores.json").read_text())
    assert "colourfulness" in json.dumps(doc)
