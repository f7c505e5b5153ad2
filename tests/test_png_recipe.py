"""The recipe inside every PNG (`ovi` iTXt + A1111 `parameters`) and `ovi gen --from` regenerating it."""

from __future__ import annotations

import json

from PIL import Image

from ovi_cli.png_recipe import a1111_parameters, read_recipe


def _chunks(path):
    with Image.open(path) as im:
        return dict(im.text)


def test_every_png_carries_its_recipe_and_from_makes_the_same_bytes(run_cli, tiny_gen_args, tmp_path):
    first = tmp_path / "a.png"
    res = run_cli("gen", "a red circle", *tiny_gen_args, "--seed", "3", "--out", str(first))
    assert res.code == 0, res.stderr
    chunks = _chunks(first)
    recipe = json.loads(chunks["ovi"])
    assert recipe["format"] == "ovi-recipe/1"
    assert recipe["prompt"] == "a red circle" and recipe["seed"] == 3 and recipe["prior"] == "ovi"
    assert recipe["settings"]["steps"] == 20 and recipe["settings"]["encoder_family"] == "kandinsky22-prior"
    assert recipe["models"]["encoder"]["fingerprint"] and recipe["versions"]["ovi"]
    assert "timings" not in recipe and "files" not in recipe and "history" not in recipe
    params = chunks["parameters"].splitlines()
    assert params[0] == "a red circle"
    assert "Steps: 2, CFG scale: 4.0, Seed: 3, Size: 32x32" in params[1] and "Prior: ovi" in params[1]

    again = tmp_path / "b.png"
    res = run_cli("gen", "--from", str(first), "--device", "cpu", "--quiet", "--out", str(again))
    assert res.code == 0, res.stderr
    assert again.read_bytes() == first.read_bytes()  # same machine, same threads: the same file
    from_sidecar = tmp_path / "c.png"
    res = run_cli("gen", "--from", str(tmp_path / "a.json"), "--quiet", "--out", str(from_sidecar))
    assert res.code == 0, res.stderr
    assert from_sidecar.read_bytes() == first.read_bytes()


def test_from_with_overrides_changes_only_those(run_cli, tmp_path):
    first = tmp_path / "a.png"
    assert run_cli("gen", "a red circle", "--model", "toy", "--steps", "10", "--quiet", "--out", str(first)).code == 0
    again = tmp_path / "b.png"
    res = run_cli("gen", "--from", str(first), "--seed", "7", "-c", "nn:0.3", "--quiet", "--out", str(again))
    assert res.code == 0, res.stderr
    old, new = read_recipe(first), read_recipe(again)
    assert new["seed"] == 7 and new["settings"]["constraints"] == ["nn:0.3"]
    assert [c["name"] for c in new["constraints"]] == ["nn"] and new["constraints"][0]["weight"] == 0.3
    changed = {k for k in old["settings"] if old["settings"][k] != new["settings"][k]}
    assert changed == {"seed", "constraints"}
    assert 'Constraints: "nn:0.3"' in a1111_parameters(new)  # quoted as A1111 quotes values with ':'


def test_a_recipe_naming_a_missing_plugin_or_model_is_one_line(run_cli, tiny_gen_args, tmp_path):
    first = tmp_path / "a.png"
    assert run_cli("gen", "a red circle", *tiny_gen_args, "--decoder", "embeds", "--out", str(first)).code == 0
    side = json.loads((tmp_path / "a.json").read_text())
    side["settings"]["prior"] = "dream-prior"
    (tmp_path / "plugin.json").write_text(json.dumps(side))
    res = run_cli("gen", "--from", str(tmp_path / "plugin.json"), "--quiet")
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1
    assert "names prior 'dream-prior', which is not installed here" in res.stderr
    side["settings"]["prior"] = "ovi"
    side["settings"]["encoder_model"] = str(tmp_path / "gone" / "prior")
    (tmp_path / "model.json").write_text(json.dumps(side))
    res = run_cli("gen", "--from", str(tmp_path / "model.json"), "--quiet")
    assert res.code != 0 and len(res.stderr.strip().splitlines()) == 1
    assert f"names encoder model '{tmp_path / 'gone' / 'prior'}', which is not on this machine" in res.stderr
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    res = run_cli("gen", "--from", str(tmp_path / "plain.png"), "--quiet")
    assert res.code != 0 and "carries no ovi recipe" in res.stderr
    res = run_cli("gen", "a prompt", "--from", str(first), "--quiet")
    assert res.code != 0 and "give no PROMPT" in res.stderr


def test_bench_images_carry_the_recipe_with_their_decoder_seed(run_cli, tmp_path):
    run = tmp_path / "run"
    res = run_cli("bench", "generate", "toy", "--model", "toy", "--steps", "3", "-k", "2", "--limit", "1", "--quiet",
                  "--out", str(run))
    assert res.code == 0, res.stderr
    images = sorted(run.glob("*/samples/*.png"))
    assert images
    records = [json.loads(line) for f in run.glob("*/records.jsonl") for line in f.read_text().splitlines()]
    by_file = {r["file"].split("/")[-1]: r for r in records}
    for path in images:
        recipe = read_recipe(path)
        assert recipe["prompt"] == by_file[path.name]["prompt"]
        assert recipe["decoder_seed"] == by_file[path.name]["seed"]
        assert recipe["seed"] == by_file[path.name]["ovi_seed"]


def test_compare_images_carry_their_prior_s_recipe(run_cli, tmp_path):
    """`ovi compare`'s per-prior PNGs carry the recipe too: that prior's settings and the decoder that made it;
    `ovi gen --from` one of them makes the same image (to rounding: compare decodes its priors in one batch)."""
    import numpy as np
    from PIL import Image

    from ovi_cli.png_recipe import read_recipe

    out = tmp_path / "cmp"
    res = run_cli("compare", "a red star and a blue square", "--model", "toy", "--steps", "10",
                  "--priors", "textemb,ovi+nn", "--out", out, "-q")
    assert res.code == 0, res.stderr
    recipe = read_recipe(out / "ovi-plus-nn.png")
    assert (recipe["prior"], recipe["decoder"], recipe["prompt"]) == ("ovi", "toy", "a red star and a blue square")
    assert recipe["settings"]["constraints"] == ["nn"] and recipe["settings"]["steps"] == 10
    assert read_recipe(out / "textemb.png")["prior"] == "textemb"
    res = run_cli("gen", "--from", out / "ovi-plus-nn.png", "-o", tmp_path / "again.png", "-q")
    assert res.code == 0, res.stderr
    a = np.asarray(Image.open(out / "ovi-plus-nn.png").convert("RGB")).astype(int)
    b = np.asarray(Image.open(tmp_path / "again.png").convert("RGB")).astype(int)
    assert np.abs(a - b).max() <= 2
