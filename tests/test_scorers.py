"""The scorers' rules on hand-made cases, and each model-based scorer against a direct forward of its model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ovi_cli.api import ScoreItem, ScorerContext
from ovi_plugins.scorers import rules
from ovi_plugins.scorers.nlp import RuleParser
from ovi_plugins.scorers.rules import Box, Detection


def _image(path, seed: int, size: int = 48):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _item(tmp_path, prompt: str, category: str, index: int = 0, seed: int = 0) -> ScoreItem:
    name = f"{prompt}_{index:06d}.png"
    return ScoreItem(_image(tmp_path / name, seed), name, prompt, index, category)


# ---- 2D spatial: the official determine_position on synthetic boxes ------------------------------
def box(cx: float, cy: float, w: float = 40, h: float = 40) -> Box:
    return Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@pytest.mark.parametrize("where, b1, b2, expected", [
    ("on the left of", box(100, 200), box(300, 200), 1.0),   # object 1 left of object 2
    ("on the left of", box(300, 200), box(100, 200), 0.0),
    ("on the right of", box(300, 200), box(100, 200), 1.0),
    ("on the right of", box(100, 200), box(300, 200), 0.0),
    ("on the top of", box(200, 100), box(200, 300), 1.0),    # image y grows downwards
    ("on the top of", box(200, 300), box(200, 100), 0.0),
    ("on the bottom of", box(200, 300), box(200, 100), 1.0),
    ("on the bottom of", box(200, 100), box(200, 300), 0.0),
    ("on the left of", box(100, 100), box(150, 400), 0.0),   # mostly vertical: not "left of"
    ("on top of", box(200, 100), box(200, 300), 0.0),        # the official code has no branch for it
    (None, box(100, 200), box(300, 200), 0.0),
    ("next to", box(100, 100), box(200, 400), 1.0),          # |dx| = 100 < 150
    ("near", box(0, 0), box(300, 400), 150 / 400),           # soft score: 150 / max(|dx|, |dy|)
])
def test_determine_position_follows_the_official_rules(where, b1, b2, expected):
    assert rules.determine_position(where, b1, b2) == pytest.approx(expected)


def test_overlapping_boxes_get_the_soft_iou_score():
    b1, b2 = Box(0, 0, 100, 100), Box(60, 0, 160, 100)  # dx = 60 > dy = 0, IoU = 40*100 / 16000 = 0.25
    assert rules.determine_position("on the left of", b1, b2) == pytest.approx(0.1 / 0.25)


def test_spatial_score_combines_detection_scores_and_position():
    left, right = Detection("cat", 0.9, box(100, 200)), Detection("dog", 0.7, box(300, 200))
    assert rules.spatial_score("on the left of", "cat", "dog", [left, right]) == pytest.approx(0.25 * 0.9 + 0.25 * 0.7
                                                                                              + 0.5)
    # wrong side: 0.4 < 0.5 -> 0; one object only: 0.25 * s < 0.5 -> 0
    assert rules.spatial_score("on the right of", "cat", "dog", [left, right]) == 0.0
    assert rules.spatial_score("on the left of", "cat", "dog", [left]) == 0.0
    # the best box of a label is the first (detections come best first)
    worse = Detection("cat", 0.3, box(500, 200))
    assert rules.spatial_score("on the left of", "cat", "dog", [left, worse, right]) > 0.5


def test_locality_takes_the_first_official_phrase_found():
    assert rules.locality("a cat on the top of a dog") == "on the top of"
    assert rules.locality("a cat on top of a dog") == "on top of"
    assert rules.locality("a bird near a tree") == "near"
    assert rules.locality("a cat and a dog") is None


def test_spatial_objects_simple_and_complex():
    p = RuleParser()
    toks = [(t.text, t.pos) for t in p.tokens("a girl on the top of a frog")]
    assert rules.spatial_objects(toks) == ("girl", "frog")
    toks = [(t.text, t.pos) for t in p.tokens("The red hat was on top of the brown coat rack.")]
    assert rules.complex_spatial_objects(toks) == ("hat", "coat")
    # two prepositions -> four objects -> none (the official rule)
    toks = [(t.text, t.pos) for t in p.tokens("a cat next to a dog next to a cow")]
    assert rules.complex_spatial_objects(toks) == (None, None)


# ---- numeracy ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, targets", [
    ("two boys", [("boy", 2)]),
    ("one turtle", [("turtle", 1)]),
    ("three cars and a dog", [("car", 3), ("dog", 1)]),
    ("seven women", [("woman", 7)]),
    ("two unicorns", []),  # not an object of T2I-CompBench's list
])
def test_numeracy_targets(prompt, targets):
    assert rules.numeracy_targets(prompt.split()) == targets


def test_counting_rule():
    d = [Detection("car", 0.9, Box(0, 0, 50, 50)), Detection("car", 0.8, Box(100, 0, 150, 50)),
         Detection("dog", 0.6, Box(0, 100, 50, 150))]
    assert rules.numeracy_score([("car", 2), ("dog", 1)], d) == 1.0
    assert rules.numeracy_score([("car", 3), ("dog", 1)], d) == pytest.approx(0.25 + 0.5)
    assert rules.numeracy_score([("car", 2), ("cat", 1)], d) == pytest.approx(0.5)
    assert rules.numeracy_score([], d) == 0.0
    # duplicates: same label and IoU > 0.9, or 90% of one inside the other
    dup = [Detection("car", 0.9, Box(0, 0, 100, 100)), Detection("car", 0.5, Box(1, 1, 100, 100)),
           Detection("car", 0.4, Box(10, 10, 50, 50)), Detection("dog", 0.4, Box(0, 0, 100, 100))]
    assert [(x.label, x.score) for x in rules.merge_duplicates(dup)] == [("car", 0.9), ("dog", 0.4)]


# ---- BLIP-VQA and 3-in-1 rules -------------------------------------------------------------------
def test_blip_questions_and_rounding():
    assert rules.blip_questions(["a cat", "the left", "top", "a dog"]) == ["a cat?", "a dog?"]
    assert len(rules.blip_questions([f"p{i}" for i in range(12)])) == 8
    assert rules.blip_pre_question('The "Red" Hat.?') == "the red hat?"
    # each answer is rounded to 4 decimals before the product, as the official strings are
    assert rules.blip_image_score([0.123456, 0.5]) == rules.round4(0.1235 * 0.5)
    assert rules.blip_image_score([]) == 1.0


def test_three_in_one_uses_the_official_lists():
    assert rules.complex_kind("The red book was on top of the yellow bookshelf.") in ("spatial", "spatialaction")
    assert rules.three_in_one("spatial", attribute=0.4, spatial=0.8, action=0.0) == pytest.approx(0.6)
    assert rules.three_in_one("action", attribute=0.4, spatial=0.0, action=0.2) == pytest.approx(0.3)
    assert rules.three_in_one("spatialaction", 0.3, 0.6, 0.9) == pytest.approx(0.6)
    assert rules.complex_kind("a prompt in no list") == "spatialaction"
    # every prompt of the shipped complex_val list has its kind
    from pathlib import Path

    kinds = rules.complex_kinds()
    assert len(kinds) == 300 and set(kinds.values()) == {"spatial", "action", "spatialaction"}
    shipped = Path("/work/shared/data/t2i-compbench/complex_val.txt")
    if shipped.is_file():
        prompts = [p for p in shipped.read_text().splitlines() if p.strip()]
        assert all(rules._prompt_key(p) in kinds for p in prompts)


# ---- the rule-based noun-phrase parser -----------------------------------------------------------
@pytest.mark.parametrize("text, chunks", [
    ("a green bench and a blue bowl", ["a green bench", "a blue bowl"]),
    ("rubber sole shoes and fluffy clouds", ["rubber sole shoes", "fluffy clouds"]),
    ("The red hat was on top of the brown coat rack.", ["The red hat", "top", "the brown coat rack"]),
    ("A person is looking at a rainbow and marveling at its beauty.", ["A person", "a rainbow", "its beauty"]),
    ("a spherical traffic light and a glass", ["a spherical traffic light", "a glass"]),
    ("the dancer's feet, as she glided", ["the dancer's feet", "she"]),
    ("A long, narrow kitchen", ["A long, narrow kitchen"]),
    ("a cube-shaped box", ["a cube-shaped box"]),
    ("a frog hidden by a bicycle", ["a frog", "a bicycle"]),
    ("the sky is blue", ["the sky"]),
])
def test_rule_parser_noun_chunks(text, chunks):
    assert RuleParser().noun_chunks(text) == chunks


def test_rule_parser_tags_adjectives_for_complex_clip():
    toks = RuleParser().tokens("The fluffy cat is on the left of the soft pillow.")
    assert " ".join(t.text for t in toks if t.pos != "ADJ") == "The cat is on the left of the pillow ."


def test_asking_for_spacy_where_it_is_missing_is_one_line():
    from ovi_cli.errors import OviError
    from ovi_plugins.scorers import nlp

    if nlp._spacy() is not None:
        pytest.skip("spaCy with en_core_web_sm is installed here")
    with pytest.raises(OviError, match="--nlp spacy: spaCy"):
        nlp.get_parser("spacy")
    with pytest.raises(OviError, match="--nlp must be one of"):
        nlp.get_parser("nltk")


# ---- BLIP-VQA on a tiny model: P(yes) equals a direct forward -----------------------------------
def _blip(models, **options):
    from ovi_plugins.scorers.blip_vqa import BlipVqa

    opts = {"model": str(models["blip"]), "image_size": 0, "first_token": "enc", **options}
    s = BlipVqa(ScorerContext(device=torch.device("cpu"), options=opts, nlp="rules"))
    s.load()
    return s


def _direct_yes(model, tokenizer, pixels, question: str, first_token: int | None) -> float:
    """transformers' own generate: one step from [DEC], the raw first-step logits."""
    enc = tokenizer([question], return_tensors="pt")
    ids = enc["input_ids"].clone()
    if first_token is not None:
        ids[:, 0] = first_token
    out = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=enc["attention_mask"], max_new_tokens=1,
                         min_new_tokens=1, do_sample=False, num_beams=1, output_logits=True,
                         return_dict_in_generate=True)
    p = torch.softmax(out.logits[0][0].float(), -1)
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    return float(p[yes] / (p[yes] + p[no]))


def test_blip_yes_probability_equals_a_direct_forward(scorer_models, tmp_path):
    s = _blip(scorer_models)
    items = [_item(tmp_path, "a green bench and a blue bowl", "color", 0, seed=1),
             _item(tmp_path, "a brown horse and a blue vase", "color", 1, seed=2)]
    assert s.questions(items[0].prompt) == ["a green bench?", "a blue bowl?"]
    pixels = s.pixels([Image.open(it.path) for it in items])
    # a batch with questions of different lengths (padding) gives what one question alone gives
    qs = ["a green bench?", "a blue bowl?", "a brown horse and a cat?"]
    batch = s.yes_probabilities(pixels, [0, 0, 1], qs)
    for k, (img, q) in enumerate(zip([0, 0, 1], qs)):
        direct = _direct_yes(s.model, s.tokenizer, pixels[img:img + 1], q, s.enc_id)
        assert batch[k] == pytest.approx(direct, abs=1e-5)
    # the image's score is the product of the 4-decimal answers
    scored = s.score(items, {})
    for it, res in zip(items, scored):
        expected = math.prod(rules.round4(p) for p in s.yes_probabilities(
            s.pixels([Image.open(it.path)]), [0, 0], s.questions(it.prompt)))
        assert res.score == pytest.approx(rules.round4(expected), abs=1e-4)
        assert len(res.details["answers"]) == 2


def test_blip_first_token_cls_is_transformers_generate(scorer_models, tmp_path):
    s = _blip(scorer_models, first_token="cls")
    pixels = s.pixels([Image.open(_image(tmp_path / "x.png", 3))])
    got = s.yes_probabilities(pixels, [0], ["a cat?"])[0]
    assert got == pytest.approx(_direct_yes(s.model, s.tokenizer, pixels, "a cat?", None), abs=1e-5)


def test_blip_interpolates_to_the_official_480_pixels(scorer_models, tmp_path):
    s = _blip(scorer_models, image_size=64)
    assert s.interpolate and s.pixels([Image.open(_image(tmp_path / "x.png", 4))]).shape == (1, 3, 64, 64)
    res = s.score([_item(tmp_path, "a cat", "color")], {})
    assert 0.0 <= res[0].score <= 1.0


# ---- CLIP score: the cosine, equal to CLIPModel's own logits / scale -------------------------------
def test_clip_score_is_the_cosine_clip_computes(scorer_models, tmp_path):
    from transformers import CLIPModel

    from ovi_plugins.scorers.clip_score import ClipScore

    s = ClipScore(ScorerContext(device=torch.device("cpu"), options={"model": str(scorer_models["clip"])},
                                nlp="rules"))
    s.load()
    items = [_item(tmp_path, "a cat on a mat", "non_spatial", 0, 5), _item(tmp_path, "a red car", "non_spatial", 1, 6)]
    got = [r.score for r in s.score(items, {})]
    model = CLIPModel.from_pretrained(scorer_models["clip"]).eval()
    images = [Image.open(it.path).convert("RGB") for it in items]
    pixels = s.processor(images=images, return_tensors="pt")["pixel_values"]
    tok = s.tokenizer([it.prompt for it in items], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels)
    cos = torch.diagonal(out.logits_per_image) / model.logit_scale.exp()
    assert got == pytest.approx(cos.tolist(), abs=1e-5)
    # complex prompts drop their adjectives first (the official --complex mode)
    assert s.text_for(_item(tmp_path, "The fluffy cat is on the soft pillow.", "complex")) == \
        "The cat is on the pillow ."


# ---- detector: OWL outputs -> detections in UniDet's frame ----------------------------------------
def test_owl_detections_threshold_frame_and_nms():
    from ovi_plugins.scorers.detector import owl_detections

    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.85, 0.0], [0.05, 0.02]])
    boxes = torch.tensor([[0.25, 0.5, 0.2, 0.2], [0.75, 0.5, 0.2, 0.2], [0.26, 0.5, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]])
    dets = owl_detections(probs, boxes, ["cat", "dog"], (958, 958), threshold=0.1, nms=0.5)
    # box 2 overlaps box 0 (same label) and goes; box 3 is below the threshold
    assert [(d.label, d.score) for d in dets] == [("cat", pytest.approx(0.9)), ("dog", pytest.approx(0.8))]
    cat = dets[0].box  # 958 px image -> UniDet's 479 px frame: half
    assert (cat.x_min, cat.y_min, cat.x_max, cat.y_max) == pytest.approx((71.85, 191.6, 167.65, 287.4), abs=1e-3)


def test_detector_matches_transformers_post_processing(scorer_models, tmp_path):
    from ovi_plugins.scorers.detector import Detector

    s = Detector(ScorerContext(device=torch.device("cpu"), nlp="rules",
                               options={"model": str(scorer_models["owl"]), "threshold": 0.0, "nms": 1.0,
                                        "template": "a photo of a {}"}))
    s.load()
    img = Image.open(_image(tmp_path / "x.png", 7, size=64)).convert("RGB")
    dets = s.detect([img], [["giraffe", "lamp"]])[0]
    batch = s.processor(text=[["a photo of a giraffe", "a photo of a lamp"]], images=[img], return_tensors="pt")
    with torch.no_grad():
        out = s.model(**batch)
    ref = s.processor.image_processor.post_process_object_detection(out, threshold=0.0, target_sizes=[(64, 64)])[0]
    frame = 479 / 64
    got = sorted((d.score, d.box.x_min, d.box.y_min, d.box.x_max, d.box.y_max) for d in dets)
    # transformers' boxes, clipped to the image as ovi clips them, in UniDet's 479 px frame
    want = sorted((float(sc), *(min(max(float(v), 0.0), 64.0) * frame for v in b))
                  for sc, b in zip(ref["scores"], ref["boxes"]))
    assert len(got) == len(want) == 16  # one box per patch of the tiny 32 px, patch 8 model
    assert np.allclose(np.array(got), np.array(want), atol=1e-3)
    item = _item(tmp_path, "a giraffe next to a lamp", "spatial")
    assert s.targets(item)["queries"] == ["giraffe", "lamp"]
    res = s.score([item, _item(tmp_path, "two boys", "numeracy", 1)], {})
    assert res[0].details["objects"] == ["giraffe", "lamp"] and res[1].details["targets"] == [["boy", 2]]
