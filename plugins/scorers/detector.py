"""`detector`: 2D spatial and numeracy scores with an open-vocabulary detector in place of UniDet.

The official scripts (`UniDet_eval/2D_spatial_eval.py`, `numeracy_eval.py`) run UniDet (a
detectron2 model, not installable from PyPI). ovi runs OWLv2 (`google/owlv2-base-patch16-ensemble`
through transformers, or any OWLv2 / OWL-ViT folder) and applies the official rules (`rules.py`):

- spatial: the prompt's two objects (simple prompts: first and last NOUN; `complex`: the nouns
  around the preposition), the best box of each, `determine_position` in UniDet's frame (the image
  resized to a 479-pixel short side, so the 150-pixel distance rule means the same), and
  0.25 * s1 + 0.25 * s2 + position / 2, zeroed below 0.5;
- numeracy: the prompt's (object, count) pairs, detections of the same object merged when IoU > 0.9
  or one lies 90% inside the other, 0.5 / n per object found + 0.5 / n when its count is right.

Known differences from UniDet (so spatial and numeracy numbers are not the paper's to the digit):
OWLv2 is asked for exactly the prompt's objects (text queries "a photo of a {object}"), so UniDet's
fixed label space and its label mapping (girl -> person, ship -> boat, ...) are not needed; its
scores are calibrated differently (ovi keeps boxes scoring >= 0.1 where UniDet keeps >= 0.5, and
the spatial formula uses the raw score as the official one does); per-object non-maximum
suppression at IoU 0.5 stands in for detectron2's. 3D spatial needs a depth model too and is not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ovi_cli.api import ImageScore, PluginOption, ScoreItem, Scorer
from ovi_cli.hub import ModelRef
from ovi_plugins.scorers.common import answers, images_per_pass, load_rgb, mean, model_settings, vit_bytes_per_image
from ovi_plugins.scorers.rules import (
    UNIDET_SHORT_SIDE,
    Box,
    Detection,
    complex_spatial_objects,
    locality,
    merge_duplicates,
    numeracy_score,
    numeracy_targets,
    spatial_objects,
    spatial_score,
)

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
FLAG = "--detector-model"


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x_max, b.x_max) - max(a.x_min, b.x_min))
    iy = max(0.0, min(a.y_max, b.y_max) - max(a.y_min, b.y_min))
    inter = ix * iy
    union = (a.x_max - a.x_min) * (a.y_max - a.y_min) + (b.x_max - b.x_min) * (b.y_max - b.y_min) - inter
    return inter / union if union > 0 else 0.0


def suppress(detections: Sequence[Detection], iou: float) -> list[Detection]:
    """Per-label non-maximum suppression: best first; a box overlapping a kept one of its label by > `iou` goes."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        if not any(k.label == d.label and box_iou(k.box, d.box) > iou for k in kept):
            kept.append(d)
    return kept


def owl_detections(probs: Any, boxes: Any, labels: Sequence[str], size: tuple[int, int], threshold: float,
                   nms: float) -> list[Detection]:
    """Detections of one image from OWL's outputs, best first, in UniDet's frame.

    `probs` `[N, Q]`: sigmoid of the class logits for the `Q` real queries; `boxes` `[N, 4]`:
    (cx, cy, w, h) relative to the padded square image (OWLv2 pads at the bottom and right, so
    x and y scale by the longer side); `size` = (width, height) of the original image.
    """
    w, h = size
    side = max(w, h)
    frame = UNIDET_SHORT_SIDE / min(w, h)
    best, which = probs.max(dim=-1)
    out = []
    for k in (best >= threshold).nonzero().flatten().tolist():
        cx, cy, bw, bh = (float(v) * side for v in boxes[k])
        x0, y0 = min(max(cx - bw / 2, 0.0), w), min(max(cy - bh / 2, 0.0), h)  # clipped to the image
        x1, y1 = min(max(cx + bw / 2, 0.0), w), min(max(cy + bh / 2, 0.0), h)
        box = Box(x0, y0, x1, y1).scaled(frame)
        out.append(Detection(labels[int(which[k])], float(best[k]), box))
    return suppress(out, nms)


class Detector(Scorer):
    name = "detector"
    description = "2D spatial and numeracy: the official UniDet rules on OWLv2 detections (a documented substitute)"
    categories = ("spatial", "numeracy")
    refuses = {"3d_spatial": "3D spatial needs a depth model as well as a detector (UniDet + DPT in the official "
                             "script); ovi has no depth scorer yet"}
    options = (
        PluginOption("model", str, DEFAULT_DETECTOR, f"open-vocabulary detector (OWLv2 / OWL-ViT): hub id or "
                     f"folder; alias {FLAG}", flag=FLAG),
        PluginOption("threshold", float, 0.1, "keep boxes scoring at least this", minimum=0.0),
        PluginOption("nms", float, 0.5, "per-object non-maximum suppression IoU", minimum=0.0),
        PluginOption("template", str, "a photo of a {}", "text query for an object ({} = the object)"),
    )

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options["model"], "detector", FLAG)]

    def settings(self) -> dict[str, Any]:
        from ovi_plugins.scorers.nlp import get_parser

        return {**model_settings(self.options["model"], "detector", FLAG), "threshold": self.options["threshold"],
                "nms": self.options["nms"], "template": self.options["template"],
                "nlp": get_parser(self.context.nlp).name}

    def describe(self) -> dict[str, Any]:
        return {"model": self.options["model"]}

    def load(self) -> None:
        from transformers import AutoConfig, AutoProcessor, Owlv2ForObjectDetection, OwlViTForObjectDetection

        from ovi_cli.errors import OviError, first_line
        from ovi_cli.hub import resolve_model_dir
        from ovi_plugins.scorers.nlp import get_parser

        if "{}" not in self.options["template"]:
            raise OviError("--option detector.template must contain {} (where the object goes)")
        self.parser = get_parser(self.context.nlp)
        root = resolve_model_dir(self.options["model"], what="detector", flag=FLAG)
        try:
            kind = AutoConfig.from_pretrained(root).model_type
            cls = {"owlv2": Owlv2ForObjectDetection, "owlvit": OwlViTForObjectDetection}.get(kind)
            if cls is None:
                raise OviError(f"detector {self.options['model']!r} is a {kind!r} model; ovi's detector scorer "
                               "runs OWLv2 or OWL-ViT")
            self.model = cls.from_pretrained(root).to(self.context.device).eval().requires_grad_(False)
            self.processor = AutoProcessor.from_pretrained(root)
        except ImportError as exc:
            raise OviError(f"the detector's image processor needs a package that is missing: {first_line(exc)} "
                           "(pip install scipy)") from exc
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load the detector from {self.options['model']!r}: "
                           f"{first_line(exc, with_type=False)}") from exc

    # ---- what to look for ---------------------------------------------------------------------------
    def targets(self, item: ScoreItem) -> dict[str, Any]:
        """The prompt's objects (and counts, or spatial relation) by the official parsing rules."""
        tokens = self.parser.tokens(item.prompt)
        if item.category == "numeracy":
            pairs = numeracy_targets([t.text for t in tokens])
            return {"mode": "numeracy", "targets": pairs, "queries": list(dict.fromkeys(n for n, _ in pairs))}
        pos = [(t.text, t.pos) for t in tokens]
        obj1, obj2 = complex_spatial_objects(pos) if item.category == "complex" else spatial_objects(pos)
        return {"mode": "spatial", "where": locality(item.prompt), "objects": [obj1, obj2],
                "queries": list(dict.fromkeys(o for o in (obj1, obj2) if o is not None))}

    def detect(self, images: list[Any], queries: list[list[str]]) -> list[list[Detection]]:
        """Detections per image (best first, UniDet's frame) for that image's own text queries."""
        import torch

        out: list[list[Detection]] = [[] for _ in images]
        todo = [k for k, q in enumerate(queries) if q]
        if not todo:
            return out
        texts = [[self.options["template"].format(q) for q in queries[k]] for k in todo]
        batch = self.processor(text=texts, images=[images[k] for k in todo], return_tensors="pt")
        dev = self.context.device
        with torch.no_grad():
            res = self.model(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev),
                             pixel_values=batch["pixel_values"].to(dev))
        logits, boxes = res.logits.float().cpu(), res.pred_boxes.float().cpu()
        for row, k in enumerate(todo):
            q = len(queries[k])  # padded queries (" ") beyond the image's own are ignored
            probs = torch.sigmoid(logits[row, :, :q])
            out[k] = owl_detections(probs, boxes[row], queries[k], images[k].size, self.options["threshold"],
                                    self.options["nms"])
        return out

    def images_per_pass(self, count: int) -> int:
        """How many of `count` images to run at once (`common.images_per_pass`): OWLv2 reads 960 px images,
        3,600 patches each, so the vision tower's attention dominates."""
        vision = self.model.config.vision_config
        size = int(vision.image_size)
        per_image = vit_bytes_per_image(size, int(vision.patch_size), int(vision.hidden_size),
                                        int(vision.num_attention_heads))
        return images_per_pass(self, count, per_image, size)

    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        wanted = [self.targets(it) for it in items]
        images = [load_rgb(it.path) for it in items]
        queries = [w["queries"] for w in wanted]
        step = self.images_per_pass(len(items))
        found = [d for start in range(0, len(items), step)
                 for d in self.detect(images[start:start + step], queries[start:start + step])]
        out = []
        for w, dets in zip(wanted, found):
            if w["mode"] == "numeracy":
                dets = merge_duplicates(dets)
                value = numeracy_score(w["targets"], dets)
                details = {"targets": [list(t) for t in w["targets"]],
                           "counts": {n: [d.label for d in dets].count(n) for n, _ in w["targets"]}}
            else:
                obj1, obj2 = w["objects"]
                value = spatial_score(w["where"], obj1, obj2, dets)
                details = {"objects": w["objects"], "where": w["where"]}
            details["detections"] = [{"label": d.label, "score": round(d.score, 4),
                                      "box": [round(v, 1) for v in (d.box.x_min, d.box.y_min, d.box.x_max,
                                                                    d.box.y_max)]} for d in dets[:20]]
            out.append(ImageScore(float(value), details))
        return out

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        if not scored:
            return {}
        values = [s.score for _, s in scored]
        rows = answers(scored, key="index")
        if category == "numeracy":
            return {"annotation_num/vqa_result.json": rows,
                    "annotation_num/score.txt": f"total:{sum(values)} num:{len(values)} avg:{mean(values)}"}
        base = "labels/annotation_obj_detection_2d"
        return {f"{base}/vqa_result.json": rows, f"{base}/avg_score.txt": f"score avg:{mean(values)}",
                f"{base}/mapping.json": [{"image": it.name, "question_id": it.index} for it, _ in scored]}
