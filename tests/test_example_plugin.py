"""The plugin author's guide's example package: pip-installed into this environment, used from `ovi gen`."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovi_cli.plugins import set_registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ovi-norm-constraint"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    # build from a copy, so the build leaves nothing in the repository
    src = tmp_path_factory.mktemp("example") / EXAMPLE.name
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(src)],
        capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    importlib.invalidate_caches()
    set_registry(None)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "ovi-norm-constraint"],
                   check=False, capture_output=True)
    importlib.invalidate_caches()
    set_registry(None)


@pytest.fixture(scope="module")
def norm_store(tmp_path_factory, encoders, encoder_repo):
    from ovi_stats.store import write_store

    # stored embeddings twice as long as the tiny encoder's own: a target the result must move to
    rng = np.random.default_rng(0)
    emb = encoders.zero_image_embeds().numpy() + 0.3 * rng.normal(size=(24, encoders.embed_dim))
    emb = 2.0 * emb
    path = tmp_path_factory.mktemp("stats") / "norms"
    write_store(path, emb, [f"{i}.png" for i in range(len(emb))],
                encoder={"source": str(encoder_repo), "fingerprint": encoders.fingerprint()})
    return path, float(np.linalg.norm(emb.astype(np.float16).astype(np.float64), axis=1).mean())


def test_example_plugin_is_listed(installed_example, run_cli):
    res = run_cli("plugins", "--json")
    assert res.code == 0, res.stderr
    rows = [p for p in json.loads(res.stdout)["plugins"] if p["name"] == "norm"]
    assert rows and rows[0]["kind"] == "constraint" and rows[0]["package"] == "ovi-norm-constraint"
    assert rows[0]["version"] == "0.2.0"
    res = run_cli("plugins", "--options")
    assert res.code == 0 and "norm.scale" in res.stdout


def test_example_plugin_keeps_help_light(installed_example):
    """ovi imports the plugin to register it even for `ovi --help`: it must not pull in torch."""
    probe = ("import sys\nfrom ovi_cli.cli import main\nmain(['--help'])\n"
             "from ovi_cli.plugins import get_registry\nassert 'norm' in get_registry().names('constraint')\n"
             "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_gen_with_the_example_constraint(installed_example, run_cli, tiny_gen_args, tmp_path, norm_store):
    store, target = norm_store
    runs = {}
    for label, extra in (("free", []), ("norm", ["--constraint", "norm:5"])):
        out = tmp_path / f"{label}.png"
        res = run_cli("gen", "a cat on a sofa", *tiny_gen_args, "--decoder", "embeds", "--out", out,
                      "--stats", store, *extra)
        assert res.code == 0, res.stderr
        runs[label] = json.loads(out.with_suffix(".json").read_text())
    values = runs["norm"]["constraint_values"]["norm"]
    assert values["weight"] == 5.0
    assert values["target_norm"] == pytest.approx(target, rel=1e-6)
    assert values["norm"] == pytest.approx(runs["norm"]["embedding_norm"], rel=1e-5)
    assert values["final"] == pytest.approx((values["norm"] / target - 1) ** 2, rel=1e-4)
    assert len(runs["norm"]["history"]["norm"]) == 20
    # the constraint does its job: the norm moves toward the stored images' mean norm
    assert abs(values["norm"] - target) < 0.8 * abs(runs["free"]["embedding_norm"] - target)

    # its option: --option norm.scale=S scales the target, checked by ovi from the declaration
    out = tmp_path / "scaled.png"
    res = run_cli("gen", "a cat on a sofa", *tiny_gen_args, "--decoder", "embeds", "--out", out,
                  "--stats", store, "-c", "norm:5", "--option", "norm.scale=2")
    assert res.code == 0, res.stderr
    scaled = json.loads(out.with_suffix(".json").read_text())
    assert scaled["constraint_values"]["norm"]["target_norm"] == pytest.approx(2 * target, rel=1e-6)
    assert scaled["options"]["norm"] == {"scale": 2.0}
    res = run_cli("gen", "a cat", *tiny_gen_args, "--decoder", "embeds", "--out", out, "--stats", store,
                  "-c", "norm", "--option", "norm.scale=0")
    assert res.code == 2 and "--option norm.scale must be >= 0.01" in res.stderr
