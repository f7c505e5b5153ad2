"""The offline toy world (issue 7): dataset, oracle, tokenizer, shipped models, `--model toy`, `ovi eval toy`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovi_plugins.toy import dataset as D
from ovi_plugins.toy import oracle as O
from ovi_plugins.toy.preset import MODELS_DIR, toy_paths

SHIPPED = toy_paths()


# ---- 1. dataset --------------------------------------------------------------------------
def test_dataset_is_deterministic_and_captions_match_objects():
    a, sa = D.make_arrays(40, "train", seed=3)
    b, sb = D.make_arrays(40, "train", seed=3)
    assert a.shape == (40, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and [s.caption for s in sa] == [s.caption for s in sb]
    for s in sa:
        assert D.parse_prompt(s.caption) == s.objects
        assert len({c for c, _ in s.objects}) == len(s.objects)  # two objects: different colours


def test_heldout_pairs_never_in_training_and_always_in_heldout():
    train = list(D.iter_scenes(3000, "train", seed=0))
    held = list(D.iter_scenes(300, "heldout", seed=0))
    seen = {o for s in train for o in s.objects}
    assert not seen & D.HELD_OUT_PAIRS
    # every colour and every shape is still seen in training, in other pairs
    assert {c for c, _ in seen} == set(D.COLOURS) and {s for _, s in seen} == set(D.SHAPES)
    assert all(set(s.objects) & D.HELD_OUT_PAIRS for s in held)
    captions = {s.caption for s in train}
    assert any(" and " in c for c in captions) and any(" on the " in c for c in captions)
    assert any(c.startswith("a small ") for c in captions)
    for p in D.heldout_prompts(24):
        assert p not in captions and set(D.parse_prompt(p)) & D.HELD_OUT_PAIRS


def test_shapes_use_plain_rgb_colours():
    for (colour, shape) in [("purple", "square"), ("orange", "circle"), ("green", "star")]:
        scene = D.Scene([D.Shape(colour, shape, 32, 32, 15)], (200, 200, 200), (0, 0, 0), 0)
        assert tuple(np.asarray(D.render(scene))[32, 32]) == D.COLOURS[colour]


def test_toy_dataset_command_writes_split_folders(run_cli, tmp_path):
    out = tmp_path / "shapes"
    res = run_cli("toy", "dataset", out, "--n", "12", "--heldout", "4")
    assert res.code == 0, res.stderr
    assert len(list((out / "train").glob("*.png"))) == 12 and len(list((out / "heldout").glob("*.png"))) == 4
    meta = [json.loads(ln) for ln in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 16 and {m["split"] for m in meta} == {"train", "heldout"}
    assert Image.open(out / meta[0]["file"]).size == (64, 64)
    res = run_cli("toy", "dataset", out, "--n", "3")
    assert res.code == 2 and res.stderr.count("\n") == 1 and "not empty" in res.stderr


# ---- 2. oracle --------------------------------------------------------------------------------
def test_oracle_accuracy_on_dataset_images_is_at_least_95_percent():
    for split in ("train", "heldout"):
        arr, scenes = D.make_arrays(200, split, seed=7)
        acc = O.dataset_accuracy(arr, [s.objects for s in scenes])
        assert acc >= 0.95, (split, acc)


def test_oracle_rejects_wrong_colour_and_wrong_binding():
    scene = D.scene_for_objects([("red", "star"), ("blue", "square")], np.random.default_rng(0))
    img = D.render(scene)
    assert O.judge(img, [("red", "star"), ("blue", "square")]).exact
    swapped = O.judge(img, [("blue", "star"), ("red", "square")])
    assert swapped.object_accuracy == 0.0 and swapped.colour_accuracy == 1.0
    blank = Image.new("RGB", (64, 64), (128, 128, 128))
    assert O.detect(blank) == [] and O.judge(blank, [("red", "star")]).object_accuracy == 0.0


# ---- 4. tokenizer and training -----------------------------------------------------------------
def test_word_level_tokenizer_loads_as_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    from ovi_plugins.toy.tokenizer import toy_words, write_tokenizer

    tok = CLIPTokenizer.from_pretrained(write_tokenizer(tmp_path / "tok"))
    for w in toy_words():
        assert len(tok(w)["input_ids"]) == 3, w  # <start> word <end>
    assert len(tok("a small yellow star on the left")["input_ids"]) == 9


def test_tiny_training_run_is_deterministic_and_loads_in_hub_layouts(run_cli, tmp_path):
    from ovi_cli.encoders import Encoders

    for name in ("a", "b"):
        res = run_cli("toy", "train", "--tiny", "--out", tmp_path / name)
        assert res.code == 0, res.stderr
    for rel in ("prior/image_encoder/model.safetensors", "prior/text_encoder/model.safetensors",
                "decoder/model.safetensors", "toy_prior/model.safetensors"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    enc = Encoders.load(str(tmp_path / "a" / "prior"))
    assert enc.encode_text(["a red circle"]).text_embeds.shape == (1, 16)
    assert json.loads((tmp_path / "a" / "train.json").read_text())["stats"]["count"] == 256


# ---- 5. shipped models, --model toy -------------------------------------------------------------
def test_shipped_models_are_small_and_in_the_hub_layouts():
    from ovi_cli.encoders import ENCODER_SUBFOLDERS, Encoders

    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024, total
    assert all((SHIPPED["encoder"] / s).is_dir() for s in ENCODER_SUBFOLDERS)
    enc = Encoders.load(str(SHIPPED["encoder"]))
    assert enc.image_size == 64 and enc.embed_dim == 64
    report = json.loads((MODELS_DIR / "train.json").read_text())
    assert report["timings_s"]["total"] < 30 * 60


def test_shipped_clip_matches_captions_to_images():
    """The trained toy CLIP ranks the right caption first for most training-distribution images."""
    from ovi_cli.encoders import Encoders

    enc = Encoders.load(str(SHIPPED["encoder"]))
    prompts = [f"a {c} {s}" for c in D.COLOURS for s in D.SHAPES if (c, s) not in D.HELD_OUT_PAIRS]
    rng = np.random.default_rng(5)
    truth = [prompts[i % len(prompts)] for i in range(40)]
    images = [D.render(D.scene_for_objects(D.parse_prompt(p), rng)) for p in truth]
    img = torch.nn.functional.normalize(enc.encode_images(images), dim=-1)
    txt = torch.nn.functional.normalize(enc.encode_text(prompts).text_embeds, dim=-1)
    pred = [prompts[i] for i in (img @ txt.T).argmax(1).tolist()]
    assert np.mean([p == t for p, t in zip(pred, truth)]) >= 0.8


def test_gen_model_toy_makes_a_red_circle(run_cli, tmp_path):
    out = tmp_path / "red.png"
    res = run_cli("gen", "a red circle", "--model", "toy", "--out", out, "--quiet", "--device", "cpu")
    assert res.code == 0, res.stderr
    img = Image.open(out)
    assert img.size == (64, 64)
    assert O.judge(img, [("red", "circle")]).object_accuracy == 1.0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["decoder"] == "toy" and sidecar["models"]["encoder"]["source"].endswith("prior")


def test_gen_model_toy_keeps_explicit_flags_and_rejects_unknown_models(run_cli, tmp_path):
    out = tmp_path / "x.png"
    res = run_cli("gen", "a blue square", "--model", "toy", "--height", "32", "--width", "48", "--steps", "5",
                  "--out", out, "--quiet", "--device", "cpu")
    assert res.code == 0, res.stderr
    assert Image.open(out).size == (48, 32)
    res = run_cli("gen", "a blue square", "--model", "nope", "--out", out, "--quiet")
    assert res.code == 2 and res.stderr.count("\n") == 1
    assert "unknown model 'nope'; available: sd21-unclip, sdxl-ip-adapter, toy" in res.stderr


# ---- 6. reduced `ovi eval toy` (CI): the benchmark harness's toy preset ----------------------------
def test_reduced_eval_toy_is_bench_generate_score_and_table(run_cli, tmp_path):
    from ovi_plugins.toy.eval import default_methods, run_folder

    out = tmp_path / "eval"
    res = run_cli("eval", "toy", "--prompts", "2", "--steps", "10", "--out", out, "--quiet")
    assert res.code == 0, res.stderr
    labels = ["real"] + [m.label for m in default_methods()]
    table = json.loads((out / "table.json").read_text())
    assert [r["name"] for r in table["rows"]] == labels  # runs are named by prior + constraints
    assert [c["key"] for c in table["columns"]] == ["single:oracle", "single:clip-score", "binding:oracle",
                                                     "binding:clip-score"]
    real = table["rows"][0]["scores"]
    assert real["single:oracle"]["mean"] == 1.0 and real["binding:oracle"]["images"] == 2
    for label in labels:
        assert label in res.stdout
        run = run_folder(out, label)
        assert (run / "scores.json").is_file() and (run / "single" / "annotation_oracle" / "vqa_result.json").is_file()
    assert json.loads((run_folder(out, "ovi+nn") / "bench.json").read_text())["settings"]["constraints"] == ["nn"]
    assert Image.open(out / "table.png").size[0] > 100 and (out / "table.md").read_text().startswith("| run |")
    # rerunning resumes: nothing is generated or scored again, the table is the same
    before = (out / "table.csv").read_text()
    assert run_cli("eval", "toy", "--prompts", "2", "--steps", "10", "--out", out, "--quiet").code == 0
    assert (out / "table.csv").read_text() == before


def test_toy_eval_alias_and_one_line_errors(run_cli, tmp_path):
    res = run_cli("toy", "eval", "--help")
    assert res.code == 0 and "--prompts" in res.stdout
    res = run_cli("eval", "toy", "--prompts", "0", "--out", tmp_path / "e")
    assert res.code == 2 and res.stderr.count("\n") == 1 and "--prompts" in res.stderr
    res = run_cli("toy", "train", "--reuse-clip", "--out", tmp_path / "none")
    assert res.code == 2 and res.stderr.count("\n") == 1 and "--reuse-clip" in res.stderr


def test_bpe_merges_make_words_single_symbols_exact():
    from ovi_plugins.toy.tokenizer import learn_word_merges

    # counts tie at 1 each round: the lexicographically smallest pair wins
    assert learn_word_merges(["ab", "abb"]) == [("a", "b"), ("a", "b</w>"), ("ab", "b</w>")]


def test_contrastive_loss_exact_values():
    import math

    from ovi_plugins.toy.train import contrastive_loss

    a = torch.eye(2)
    one = torch.tensor(1.0)
    # distinct captions: CE of logits [1, 0] -> log(1 + e^-1)
    assert float(contrastive_loss(a, a, one, torch.tensor([0, 1]))) == pytest.approx(math.log(1 + math.exp(-1)))
    # same caption: both columns are positives (target 1/2, 1/2) -> log(1 + e) - 1/2
    assert float(contrastive_loss(a, a, one, torch.tensor([0, 0]))) == pytest.approx(math.log(1 + math.e) - 0.5)


def test_parse_prompt_and_canonical_layout():
    assert D.parse_prompt("a small red star on the left") == [("red", "star")]
    assert D.parse_prompt("a blue square and a green triangle") == [("blue", "square"), ("green", "triangle")]
    assert D.parse_prompt("a zebra") == []
    scene = D.canonical_scene([("blue", "square"), ("green", "triangle")])
    dets = O.detect(D.render(scene))
    assert [(d.colour, d.shape) for d in dets] == [("blue", "square"), ("green", "triangle")]
    assert dets[0].cx < 32 < dets[1].cx


def test_the_decoder_target_keeps_the_images_background_and_the_canonical_layout():
    import numpy as np

    from ovi_plugins.toy.train import decoder_target

    scene = D.sample_scene(np.random.default_rng(3))
    target = decoder_target(scene)
    assert (target.background, target.gradient, target.noise_std) == (scene.background, scene.gradient, 0.0)
    assert target.shapes == D.canonical_scene(scene.objects).shapes
    grey = decoder_target(scene, background=False)
    assert (grey.background, grey.gradient) == (D.CANONICAL_BACKGROUND, (0.0, 0.0, 0.0))
    # the top-left pixel is the image's background colour, its bottom row that plus the gradient
    arr = np.asarray(D.render(target), np.float32)
    assert np.allclose(arr[0, 0], np.clip(scene.background, 0, 255), atol=0.5)
    assert np.allclose(arr[-1, 0], np.clip(np.add(scene.background, scene.gradient), 0, 255), atol=1.0)
