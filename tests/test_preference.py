"""Human-preference scorers: PickScore and HPS v2.1 on tiny random models in their official layouts,
against the published formulas (PickScore: logit_scale x cosine; HPS: OpenCLIP's cosine)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ovi_cli.api import ScorerContext
from tests.helpers import tiny_preference, tiny_scorers


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny_scorers.make_clip_repo(tmp_path_factory.mktemp("pick") / "clip")


@pytest.fixture(scope="module")
def hps_dir(tmp_path_factory, clip_dir):
    from transformers import CLIPTokenizer

    vocab = len(CLIPTokenizer.from_pretrained(clip_dir))
    return tiny_preference.make_hps_repo(tmp_path_factory.mktemp("hps") / "HPSv2", vocab)


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from ovi_cli.bench.score import list_items
    from ovi_plugins.toy.eval import write_real_run

    run = tmp_path_factory.mktemp("pref") / "run"
    write_real_run(run, images_per_prompt=2, seed=3, limit=2)
    return run, list_items(run, "binding")


def _scorer(cls, name, **options):
    from ovi_cli.api import resolve_options

    return cls(ScorerContext(device=torch.device("cpu"), options=resolve_options(cls, name, options)))


def test_pickscore_is_logit_scale_times_cosine(clip_dir, items):
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel

    from ovi_plugins.scorers.pickscore import PickScore

    s = _scorer(PickScore, "pickscore", model=str(clip_dir), processor=str(clip_dir))
    s.load()
    _, its = items
    got = s.score(its, {})
    # the official inference code, written out
    model, proc = CLIPModel.from_pretrained(clip_dir).eval(), AutoProcessor.from_pretrained(clip_dir)
    for it, res in zip(its, got):
        image_inputs = proc(images=[Image.open(it.path).convert("RGB")], return_tensors="pt")
        text_inputs = proc(text=[it.prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            ie = model.get_image_features(**image_inputs)
            te = model.get_text_features(**text_inputs)
        ie = getattr(ie, "pooler_output", ie)
        te = getattr(te, "pooler_output", te)
        ie, te = ie / ie.norm(dim=-1, keepdim=True), te / te.norm(dim=-1, keepdim=True)
        want = float(model.logit_scale.detach().exp() * (te @ ie.T)[0, 0])
        assert res.score == pytest.approx(want, rel=1e-4, abs=1e-5)
    # batched = one at a time
    assert [r.score for r in s.score(its[:1], {})] == pytest.approx([got[0].score], rel=1e-5)


def test_hps_equals_openclip_forward_on_the_checkpoint(hps_dir, clip_dir, items):
    from PIL import Image
    from transformers import AutoProcessor

    from ovi_plugins.scorers.hps import Hps

    s = _scorer(Hps, "hps", model=str(hps_dir), processor=str(clip_dir), vision_heads=4, text_heads=4)
    s.load()
    _, its = items
    got = [r.score for r in s.score(its, {})]
    sd = torch.load(hps_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    proc = AutoProcessor.from_pretrained(clip_dir)
    pixels = proc(images=[Image.open(it.path).convert("RGB") for it in its], return_tensors="pt")["pixel_values"]
    tokens = proc(text=[it.prompt for it in its], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt")["input_ids"]
    img, txt = tiny_preference.openclip_features(sd, pixels, tokens)
    want = torch.diagonal(img @ txt.T).tolist()  # hpsv2's score: diag(logits_per_image) of normalised features
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_preference_scorers_from_bench_score(hps_dir, clip_dir, items, tmp_path, run_cli):
    run, _ = items
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    res = run_cli("bench", "score", dst, "--scorers", "pickscore,hps", "--option", f"pickscore.model={clip_dir}",
                  "--option", f"pickscore.processor={clip_dir}", "--option", f"hps.model={hps_dir}",
                  "--option", f"hps.processor={clip_dir}", "-O", "hps.vision_heads=4", "-O", "hps.text_heads=4",
                  "--quiet", "--json")
    assert res.code == 0, res.stderr
    doc = json.loads((dst / "scores.json").read_text())
    assert {"pickscore", "hps"} <= set(doc["categories"]["binding"])
    res = run_cli("bench", "table", dst, "--json")
    keys = json.loads(res.stdout)["rows"][0]["scores"]
    assert "binding:pickscore" in keys and "single:hps" in keys


def test_hps_missing_checkpoint_is_one_line(tmp_path, clip_dir, items, run_cli):
    run, _ = items
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    (tmp_path / "empty").mkdir()
    res = run_cli("bench", "score", dst, "--scorers", "hps", "--option", f"hps.model={tmp_path / 'empty'}",
                  "--option", f"hps.processor={clip_dir}", "--quiet")
    assert res.code != 0 and "HPS_v2.1_compressed.pt" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def imagereward_dirs(tmp_path_factory):
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("imagereward")
    tiny_scorers.write_blip_tokenizer(root / "tokenizer")
    vocab = len(BertTokenizer.from_pretrained(root / "tokenizer"))
    return tiny_preference.make_imagereward_repo(root / "ImageReward", vocab), root / "tokenizer"


def test_imagereward_equals_blip_forward_on_the_checkpoint(imagereward_dirs, items):
    from PIL import Image
    from transformers import BertTokenizer, CLIPImageProcessor

    from ovi_plugins.scorers.imagereward import ImageRewardScorer

    model_dir, tok_dir = imagereward_dirs
    s = _scorer(ImageRewardScorer, "imagereward", model=str(model_dir), tokenizer=str(tok_dir), vision_heads=4)
    s.load()
    _, its = items
    got = [r.score for r in s.score(its, {})]
    sd = torch.load(model_dir / "ImageReward.pt", weights_only=True)
    # the official preprocessing: Resize(224, bicubic), CenterCrop, ToTensor, Normalize(CLIP mean/std), at 32 here
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, resample=3,
                              image_mean=tiny_scorers.CLIP_MEAN, image_std=tiny_scorers.CLIP_STD)
    pixels = proc(images=[Image.open(it.path).convert("RGB") for it in its], return_tensors="pt")["pixel_values"]
    tok = BertTokenizer.from_pretrained(tok_dir)([it.prompt for it in its], padding="max_length", truncation=True,
                                                 max_length=35, return_tensors="pt")
    want = tiny_preference.imagereward_reward(sd, pixels, tok["input_ids"], tok["attention_mask"]).tolist()
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert len(set(round(g, 6) for g in got)) > 1  # different prompts and images, different rewards


def test_preference_scorers_bound_their_batches_by_memory(clip_dir, items, monkeypatch):
    """Issue 22: a batch too big for the free memory is scored in parts, same scores, one warning."""
    from ovi_cli.api import resolve_options
    from ovi_cli.reporter import WarnReporter
    from ovi_plugins.scorers import common
    from ovi_plugins.scorers.pickscore import PickScore
    from ovi_stats import matmul_search

    warned: list[str] = []
    s = PickScore(ScorerContext(device=torch.device("cpu"), reporter=WarnReporter(warned.append),
                                options=resolve_options(PickScore, "pickscore",
                                                        {"model": str(clip_dir), "processor": str(clip_dir)})))
    s.load()
    _, its = items
    whole = s.score(its, {})
    v = s.model.config.vision_config
    per_image = common.vit_bytes_per_image(v.image_size, v.patch_size, v.hidden_size, v.num_attention_heads)
    calls = []
    real = s._score_pass
    monkeypatch.setattr(s, "_score_pass", lambda part: calls.append(len(part)) or real(part))
    monkeypatch.setattr(matmul_search, "free_bytes", lambda device: int(1.5 * per_image / common.MEMORY_FRACTION))
    parts = s.score(its, {})
    assert calls == [1] * len(its) and len(its) > 1
    assert [r.score for r in parts] == pytest.approx([r.score for r in whole], abs=1e-5)
    assert len(warned) == 1 and "pickscore" in warned[0] and "scoring 1 at a time" in warned[0]
