"""The official T2I-CompBench scoring rules, as pure functions (no models).

Each function restates one rule of the official scripts (https://github.com/Karine-Huang/T2I-CompBench,
read at commit 1b70949); the docstrings say which, and where ovi knowingly differs.

- BLIP-VQA (`BLIPvqa_eval/BLIP_vqa.py`): one question "{noun phrase}?" per noun phrase (at most 8,
  without 'top', 'the side', 'the left', 'the right'); the answer to each is
  P(yes) / (P(yes) + P(no)) of the decoder's first token, written with 4 decimals; the image's
  score is the product of those 4-decimal numbers (1 when there is no question), written with 4 decimals.
- 2D spatial (`UniDet_eval/2D_spatial_eval.py`): `determine_position` and the score
  0.25 * s1 + 0.25 * s2 + position / 2, zeroed below 0.5.
- numeracy (`UniDet_eval/numeracy_eval.py`): the objects and counts of the prompt, duplicates
  merged, 0.5 per object found + 0.5 when its count is right, weighted by 1 / number of objects.
- 3-in-1 (`3_in_1_eval/3_in_1.py`): (spatial + attribute) / 2, (action + attribute) / 2 or the mean
  of all three, by the prompt's sub-list of complex_val.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).parent / "data"

# ---- BLIP-VQA ------------------------------------------------------------------------------------
BLIP_SKIPPED_PHRASES = ("top", "the side", "the left", "the right")
BLIP_MAX_PHRASES = 8  # the official --np_num
BLIP_QUESTION_MAX_TOKENS = 35


def blip_questions(noun_phrases: Sequence[str], max_phrases: int = BLIP_MAX_PHRASES) -> list[str]:
    """The official questions: "{phrase}?" for the first `max_phrases` kept noun phrases."""
    kept = [p for p in noun_phrases if p not in BLIP_SKIPPED_PHRASES]
    return [f"{p}?" for p in kept[:max_phrases]]


def blip_pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's `pre_question`: lower case, drop . ! " ( ) * # : ; ~, strip trailing spaces, at most 50 words."""
    q = re.sub(r"([.!\"()*#:;~])", "", question.lower()).rstrip(" ")
    words = q.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else q


def yes_probability(p_yes: float, p_no: float) -> float:
    """The official answer: P(yes) / (P(yes) + P(no)) over the first decoded token."""
    return p_yes / (p_yes + p_no)


def round4(x: float) -> float:
    """A number as the official files write it ('{:.4f}') and read it back."""
    return float(f"{x:.4f}")


def blip_image_score(answers: Sequence[float]) -> float:
    """Product of the 4-decimal answers (an image without question scores 1), to 4 decimals."""
    score = 1.0
    for a in answers:
        score *= round4(a)
    return round4(score)


# ---- 2D spatial ----------------------------------------------------------------------------------
SPATIAL_WORDS = ("on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of",
                 "on the top of", "on top of")  # the official order: the first one found in the prompt wins
COMPLEX_PREPOSITIONS = ("on top of", "on bottom of", "on the left", "on the right", "next to", "on side of", "near")
PERSON_WORDS = ("girl", "boy", "man", "woman")
UNIDET_SHORT_SIDE = 479  # UniDet sees the image resized to a 479-pixel short side; the 150 px rule is in that frame
DISTANCE_THRESHOLD = 150.0
IOU_THRESHOLD = 0.1
SPATIAL_MIN_SCORE = 0.5


@dataclass(frozen=True)
class Box:
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def scaled(self, factor: float) -> Box:
        return Box(self.x_min * factor, self.y_min * factor, self.x_max * factor, self.y_max * factor)


def locality(prompt: str) -> str | None:
    """The spatial words of a prompt: the first of `SPATIAL_WORDS` that occurs in it (substring)."""
    return next((w for w in SPATIAL_WORDS if w in prompt), None)


def determine_position(where: str | None, box1: Box, box2: Box, iou_threshold: float = IOU_THRESHOLD,
                       distance_threshold: float = DISTANCE_THRESHOLD) -> float:
    """The official soft position score of object 1 relative to object 2 (boxes in UniDet's frame).

    Like the official code, 'on top of' (without 'the') and unknown words score 0, and 'on the
    bottom of' / 'on the top of' score 0 when the centres are the wrong way round.
    """
    c1 = ((box1.x_min + box1.x_max) / 2, (box1.y_min + box1.y_max) / 2)
    c2 = ((box2.x_min + box2.x_max) / 2, (box2.y_min + box2.y_max) / 2)
    dx, dy = c2[0] - c1[0], c2[1] - c1[1]
    x_overlap = max(0.0, min(box1.x_max, box2.x_max) - max(box1.x_min, box2.x_min))
    y_overlap = max(0.0, min(box1.y_max, box2.y_max) - max(box1.y_min, box2.y_min))
    inter = x_overlap * y_overlap
    union = ((box1.x_max - box1.x_min) * (box1.y_max - box1.y_min)
             + (box2.x_max - box2.x_min) * (box2.y_max - box2.y_min) - inter)
    iou = inter / union if union > 0 else 0.0

    def along(primary: float, other: float) -> float:
        if abs(primary) > abs(other):
            return 1.0 if iou < iou_threshold else iou_threshold / iou
        return 0.0

    if where in ("next to", "on side of", "near"):
        if abs(dx) < distance_threshold or abs(dy) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(dx), abs(dy))
    if where == "on the right of":
        return along(dx, dy) if dx < 0 else 0.0
    if where == "on the left of":
        return along(dx, dy) if dx > 0 else 0.0
    if where == "on the bottom of":
        return along(dy, dx) if dy < 0 else 0.0
    if where == "on the top of":
        return along(dy, dx) if dy > 0 else 0.0
    return 0.0


def spatial_objects(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """Simple prompts: the first and the last NOUN token (text, pos) of the prompt."""
    nouns = [text for text, pos in tokens if pos == "NOUN"]
    return (nouns[0], nouns[-1]) if nouns else (None, None)


def complex_spatial_objects(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """Complex prompts: the nouns before and after each preposition; exactly two, or none.

    The official rule: at each token where one of `COMPLEX_PREPOSITIONS` starts (3, 2 or 1 tokens),
    the nearest NOUN or PROPN before it and the first NOUN after it; when no NOUN follows, the
    first PROPN that is followed by a non-PROPN.
    """
    texts = [t for t, _ in tokens]
    pos = [p for _, p in tokens]
    n = len(tokens)
    objects: list[str] = []
    for i in range(n):
        k = next((m for m in (3, 2, 1) if " ".join(texts[i:i + m]) in COMPLEX_PREPOSITIONS), 0)
        if not k:
            continue
        for j in range(i - 1, -1, -1):
            if pos[j] in ("NOUN", "PROPN"):
                objects.append(texts[j])
                break
        after = next((j for j in range(i + k, n) if pos[j] == "NOUN"), None)
        if after is not None:
            objects.append(texts[after])
        elif i + k < n:  # no noun up to the end: a proper noun followed by something else
            for j in range(i + k, n - 1):
                if pos[j] == "PROPN" and pos[j + 1] != "PROPN":
                    objects.append(texts[j])
                    break
    return (objects[0], objects[1]) if len(objects) == 2 else (None, None)


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box


def spatial_score(where: str | None, obj1: str | None, obj2: str | None, detections: Sequence[Detection]) -> float:
    """The official 2D spatial score from detections sorted by score (best first) in UniDet's frame."""
    labels = [d.label for d in detections]
    if obj1 is not None and obj2 is not None and obj1 in labels and obj2 in labels:
        d1, d2 = detections[labels.index(obj1)], detections[labels.index(obj2)]
        score = 0.25 * d1.score + 0.25 * d2.score + determine_position(where, d1.box, d2.box) / 2
    elif obj1 is not None and obj1 in labels:
        score = 0.25 * detections[labels.index(obj1)].score
    elif obj2 is not None and obj2 in labels:
        score = 0.25 * detections[labels.index(obj2)].score
    else:
        score = 0.0
    return 0.0 if score < SPATIAL_MIN_SCORE else score


# ---- numeracy ------------------------------------------------------------------------------------
COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
               "eight": 8}


@lru_cache(maxsize=1)
def numeracy_objects() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Singular and plural object names of T2I-CompBench's `new_objects.txt` ("knife - knives")."""
    singular, plural = [], []
    for line in (DATA / "new_objects.txt").read_text(encoding="utf-8").splitlines():
        if " - " in line:
            s, p = line.split(" - ", 1)
            singular.append(s.strip().lower())
            plural.append(p.strip().lower())
    return tuple(singular), tuple(plural)


def numeracy_targets(words: Sequence[str]) -> list[tuple[str, int]]:
    """(object, count) asked for by a prompt's tokens: a count word, then a one- or two-word object.

    The official rule: after "a", "an", "one" ... "eight", a known two-word object (singular or
    plural) or else a known one-word object; plural objects are named by their singular. ovi reads
    counts from the same word list without word2number (identical for these words) and skips a
    count word at the very end of the prompt (the official script indexes past the end there).
    """
    singular, plural = numeracy_objects()
    out: list[tuple[str, int]] = []
    n = len(words)
    for i, w in enumerate(words):
        if w not in COUNT_WORDS or i + 1 >= n:
            continue
        two = f"{words[i + 1]} {words[i + 2]}" if i < n - 2 else None
        one_word = w in ("a", "an", "one")
        if two is not None and (two in singular or two in plural):
            if two in plural and not one_word:
                out.append((singular[plural.index(two)], COUNT_WORDS[w]))
            else:
                out.append((two, 1))
        elif words[i + 1] in singular or words[i + 1] in plural:
            if words[i + 1] in singular and one_word:
                out.append((words[i + 1], 1))
            else:
                name = singular[plural.index(words[i + 1])] if words[i + 1] in plural else words[i + 1]
                out.append((name, COUNT_WORDS[w]))
    return out


def same_object(b1: Box, b2: Box) -> bool:
    """The official duplicate test (pixel-inclusive areas): IoU > 0.9 or one box 90% inside the other."""
    ix = max(0.0, min(b1.x_max, b2.x_max) - max(b1.x_min, b2.x_min) + 1)
    iy = max(0.0, min(b1.y_max, b2.y_max) - max(b1.y_min, b2.y_min) + 1)
    inter = ix * iy
    a1 = (b1.x_max - b1.x_min + 1) * (b1.y_max - b1.y_min + 1)
    a2 = (b2.x_max - b2.x_min + 1) * (b2.y_max - b2.y_min + 1)
    iou = inter / float(a1 + a2 - inter)
    return iou > 0.9 or inter / float(a1) > 0.9 or inter / float(a2) > 0.9


def merge_duplicates(detections: Sequence[Detection]) -> list[Detection]:
    """Detections without the official duplicates (same label and `same_object`), first one kept."""
    kept: list[Detection] = []
    for d in detections:
        if not any(k.label == d.label and same_object(d.box, k.box) for k in kept):
            kept.append(d)
    return kept


def numeracy_score(targets: Sequence[tuple[str, int]], detections: Sequence[Detection]) -> float:
    """0.5 / len(targets) per object detected at all, + 0.5 / len(targets) when its count is right.

    `detections` are already merged (`merge_duplicates`). A prompt without a countable object
    scores 0 (the official script divides by zero there).
    """
    if not targets:
        return 0.0
    labels = [d.label for d in detections]
    weight = 1.0 / len(targets)
    score = 0.0
    for name, count in targets:
        if name in labels:
            score += 0.5 * weight
            if labels.count(name) == count:
                score += 0.5 * weight
    return score


# ---- 3-in-1 --------------------------------------------------------------------------------------
def _prompt_key(prompt: str) -> str:
    return prompt.strip().split(".")[0].lower()


@lru_cache(maxsize=1)
def complex_kinds() -> dict[str, str]:
    """complex_val prompt (as the official script keys it) -> "spatial" | "action" | "spatialaction"."""
    out: dict[str, str] = {}
    for kind in ("spatial", "action", "spatialaction"):
        for line in (DATA / f"complex_val_{kind}.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.setdefault(_prompt_key(line), kind)
    return out


def complex_kind(prompt: str) -> str:
    """Which relations a complex prompt has; prompts in no list count as "spatialaction" (all three)."""
    kind = complex_kinds().get(_prompt_key(prompt), "spatialaction")
    return "spatialaction" if kind not in ("spatial", "action") else kind


def three_in_one(kind: str, attribute: float, spatial: float, action: float) -> float:
    """The official combination of BLIP-VQA (attribute), 2D spatial and CLIP (action) scores."""
    if kind == "spatial":
        return (spatial + attribute) * 0.5
    if kind == "action":
        return (action + attribute) * 0.5
    return (attribute + spatial + action) / 3
