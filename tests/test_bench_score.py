"""`ovi bench score` and `ovi bench table` through the real CLI, on tiny random scorer models and
hand-made run folders: the official files' shapes, resume, refusals, one-line errors, the table."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovi_cli import hookimpl
from ovi_cli.api import ImageScore, Scorer
from ovi_cli.plugins import load_registry, set_registry

PROMPTS = {
    "color": ["a green bench and a blue bowl", "a blue horse and a brown vase"],
    "spatial": ["a giraffe next to a lamp", "a girl on the top of a frog"],
    "numeracy": ["two boys", "three cars and one dog"],
    "non_spatial": ["A cat is playing with a toy.", "A woman is holding a yoga mat."],
    "complex": ["The red hat was on top of the brown coat rack.", "The black phone was resting on the brown charger."],
    "3d_spatial": ["a dog in front of a desk"],
}
K = 2  # images per prompt


def make_run(root: Path, prompts: dict[str, list[str]] = PROMPTS, prior: str = "ovi",
             constraints: tuple[str, ...] = (), benchmark: str = "t2i-compbench", seed: int = 0) -> Path:
    """A run folder in the official layout with random images (what `ovi bench generate` writes)."""
    rng = np.random.default_rng(seed)
    for cat, ps in prompts.items():
        d = root / cat / "samples"
        d.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(ps):
            for j in range(K):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"{p}_{i * K + j:06d}.png")
    bench = {"benchmark": benchmark, "settings": {"prior": prior, "constraints": list(constraints)},
             "categories": list(prompts)}
    (root / "bench.json").write_text(json.dumps(bench))
    return root


@pytest.fixture
def model_args(scorer_models) -> list[str]:
    return ["--clip-model", str(scorer_models["clip"]), "--blip-model", str(scorer_models["blip"]),
            "--detector-model", str(scorer_models["owl"]), "-O", "blip-vqa.image_size=0", "--device", "cpu",
            "--nlp", "rules", "--quiet"]


def _json(path: Path):
    return json.loads(path.read_text())


def test_score_writes_the_official_files_in_their_shapes(tmp_path, run_cli, model_args):
    run = make_run(tmp_path / "run")
    r = run_cli("bench", "score", run, *model_args, "-O", "detector.threshold=0")
    assert r.code == 0, r.stderr
    assert "3d_spatial: not scored" in r.stderr and "depth" in r.stderr
    n = 2 * K
    blip = _json(run / "color/annotation_blip/vqa_result.json")
    assert [x["question_id"] for x in blip] == list(range(n))
    assert all(isinstance(x["answer"], str) and len(x["answer"].split(".")[1]) == 4 for x in blip)
    assert (run / "color/annotation_blip/blip_vqa_score.txt").read_text().startswith("BLIP-VQA score:")
    clip = _json(run / "non_spatial/annotation_clip/vqa_result.json")
    assert [x["question_id"] for x in clip] == list(range(n)) and all(isinstance(x["answer"], float) for x in clip)
    det = run / "spatial/labels/annotation_obj_detection_2d"
    assert [x["question_id"] for x in _json(det / "vqa_result.json")] == list(range(n))
    assert _json(det / "mapping.json")[1] == {"image": f"{PROMPTS['spatial'][0]}_000001.png", "question_id": 1}
    assert (det / "avg_score.txt").read_text().startswith("score avg:")
    num = _json(run / "numeracy/annotation_num/vqa_result.json")
    assert len(num) == n and all(0 <= x["answer"] <= 1 for x in num)
    assert (run / "numeracy/annotation_num/score.txt").read_text().startswith("total:")
    # complex: its three parts in their official places, and 3-in-1 combining them per image
    parts = {name: _json(run / "complex" / rel) for name, rel in (
        ("attribute", "annotation_blip/vqa_result.json"), ("action", "annotation_clip/vqa_result.json"),
        ("spatial", "labels/annotation_obj_detection_2d/vqa_result.json"))}
    three = _json(run / "complex/annotation_3_in_1/vqa_result.json")
    from ovi_plugins.scorers.rules import complex_kind, three_in_one

    for k, row in enumerate(three):
        kind = complex_kind(PROMPTS["complex"][k // K])
        want = three_in_one(kind, float(parts["attribute"][k]["answer"]), parts["spatial"][k]["answer"],
                            parts["action"][k]["answer"])
        assert row == {"question_id": k, "answer": pytest.approx(want)}
    scores = _json(run / "scores.json")
    assert scores["name"] == "ovi" and scores["benchmark"] == "t2i-compbench"
    assert scores["primary"] == {"color": "blip-vqa", "spatial": "detector", "numeracy": "detector",
                                 "non_spatial": "clip-score", "complex": "3-in-1"}
    color = scores["categories"]["color"]["blip-vqa"]
    assert color["images"] == n and color["prompts"] == 2 and color["unscored"] == 0
    assert color["mean"] == pytest.approx(np.mean([float(x["answer"]) for x in blip]))
    assert "3d_spatial" in scores["skipped"] and "3d_spatial" not in scores["categories"]
    assert scores["scorers"]["3-in-1"]["requires"] == ["blip-vqa", "detector", "clip-score"]
    assert scores["scorers"]["blip-vqa"]["settings"]["nlp"] == "rules v1"


class CountingPlugin:
    """A third-party scorer (registered in-process): the image's mean red value; counts what it scores."""

    scored: list[str] = []

    class RedScorer(Scorer):
        name = "red"
        description = "mean red channel / 255"
        categories = ("color",)

        def score(self, items, inputs):
            CountingPlugin.scored += [it.name for it in items]
            return [ImageScore(float(np.asarray(Image.open(it.path).convert("RGB"))[..., 0].mean() / 255))
                    for it in items]

    @hookimpl
    def register_scorers(self, register):
        register(self.RedScorer)


@pytest.fixture
def counting_registry():
    CountingPlugin.scored = []
    set_registry(load_registry(extra=[("counting", CountingPlugin())]))
    yield CountingPlugin
    set_registry(None)


def test_resume_scores_only_new_or_changed_images(tmp_path, run_cli, counting_registry):
    run = make_run(tmp_path / "run", {"color": PROMPTS["color"]})
    assert run_cli("bench", "score", run, "--scorers", "red", "-q").code == 0
    assert len(counting_registry.scored) == 4
    first = _json(run / "scores.json")["categories"]["color"]["red"]
    assert run_cli("bench", "score", run, "--scorers", "red", "-q").code == 0
    assert len(counting_registry.scored) == 4  # nothing new
    # a new image, a regenerated one, and a torn last cache line (an interrupt) are scored again
    samples = run / "color" / "samples"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(samples / "a red cup_000004.png")
    Image.new("RGB", (40, 40), (0, 0, 0)).save(samples / f"{PROMPTS['color'][0]}_000000.png")
    cache = run / "color" / "scores" / "red.jsonl"
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    counting_registry.scored.clear()
    assert run_cli("bench", "score", run, "--scorers", "red", "-q").code == 0
    assert sorted(counting_registry.scored) == sorted([
        "a red cup_000004.png", f"{PROMPTS['color'][0]}_000000.png", f"{PROMPTS['color'][1]}_000003.png"])
    now = _json(run / "scores.json")["categories"]["color"]["red"]
    assert now["images"] == 5 and now["prompts"] == 3 and now["mean"] != first["mean"]
    assert len(cache.read_text().splitlines()) == 1 + 5  # header + one line per image, compacted


def test_changed_settings_are_refused_then_rescored(tmp_path, run_cli, model_args):
    run = make_run(tmp_path / "run", {"spatial": PROMPTS["spatial"]})
    assert run_cli("bench", "score", run, *model_args).code == 0
    r = run_cli("bench", "score", run, *model_args, "-O", "detector.threshold=0.3")
    assert r.code == 2 and r.stderr.count("\n") == 1
    assert "other settings" in r.stderr and "threshold: 0.1 -> 0.3" in r.stderr and "--rescore" in r.stderr
    r = run_cli("bench", "score", run, *model_args, "-O", "detector.threshold=0.3", "--rescore")
    assert r.code == 0, r.stderr
    assert _json(run / "scores.json")["categories"]["spatial"]["detector"]["settings"]["threshold"] == 0.3


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "does not exist"),
    (["{empty}"], "holds no <category>/samples/ folder"),
    (["{run}", "--scorers", "nope"], "unknown scorer 'nope'"),
    (["{run}", "--categories", "shape"], "--categories: shape not in"),
    (["{run}", "-O", "blip-vqa.nope=1"], "'blip-vqa' has no option 'nope'"),
    (["{run}", "-O", "nope.k=1"], "no scorer named 'nope'"),
    (["{run}", "--nlp", "nltk"], "--nlp must be one of"),
    (["{run}", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["{run}", "--blip-model", "nobody/no-such-model"], "hf download nobody/no-such-model"),
])
def test_score_errors_are_one_line(tmp_path, run_cli, args, message):
    run = make_run(tmp_path / "run", {"color": PROMPTS["color"][:1]})
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "run": run}
    r = run_cli("bench", "score", *[a.format(**paths) for a in args], "--device", "cpu", "-q")
    assert r.code == 2, r.stdout + r.stderr
    assert message in r.stderr and r.stderr.startswith("ovi: error:") and r.stderr.count("\n") == 1
    assert not (run / "color" / "scores").exists()  # nothing ran


def test_missing_models_are_named_together_before_loading(tmp_path, run_cli):
    run = make_run(tmp_path / "run", {"color": PROMPTS["color"][:1], "spatial": PROMPTS["spatial"][:1]})
    r = run_cli("bench", "score", run, "--device", "cpu", "-q")
    assert r.code == 2 and r.stderr.count("\n") == 1
    assert "Salesforce/blip-vqa-capfilt-large" in r.stderr and "google/owlv2-base-patch16-ensemble" in r.stderr


def test_toy_run_scores_offline_with_oracle_and_toy_clip(tmp_path, run_cli):
    from ovi_plugins.toy.dataset import heldout_prompts, parse_prompt, render, scene_for_objects

    run = tmp_path / "toy"
    rng = np.random.default_rng(0)
    prompts = heldout_prompts(4, 0)
    for i, p in enumerate(prompts):
        d = run / "heldout" / "samples"
        d.mkdir(parents=True, exist_ok=True)
        render(scene_for_objects(parse_prompt(p), rng)).save(d / f"{p}_{i:06d}.png")
    (run / "bench.json").write_text(json.dumps({"benchmark": "toy", "settings": {"prior": "textemb"}}))
    unscored = tmp_path / "toy-copy"
    shutil.copytree(run, unscored)
    r = run_cli("bench", "score", run, "--scorers", "oracle,clip-score", "--model", "toy", "--device", "cpu", "-q")
    assert r.code == 0, r.stderr
    # the toy benchmark names its own preset: without --model the same toy CLIP scores it, offline
    r = run_cli("bench", "score", unscored, "--scorers", "clip-score", "--device", "cpu", "-q")
    assert r.code == 0, r.stderr
    clip = [_json(d / "scores.json")["categories"]["heldout"]["clip-score"] for d in (run, unscored)]
    assert clip[0] == clip[1]
    scores = _json(run / "scores.json")["categories"]["heldout"]
    assert scores["oracle"]["mean"] == 1.0  # real renders of the prompts: the oracle finds every object
    assert -1 <= scores["clip-score"]["mean"] <= 1 and scores["clip-score"]["images"] == 4
    assert (run / "heldout/annotation_oracle/vqa_result.json").is_file()
    # a toy run's default scorer is the oracle
    r = run_cli("bench", "score", run, "--device", "cpu", "-q")
    assert r.code == 0 and "textemb" in r.stdout and "oracle" in r.stdout


def _scores_doc(name: str, prior: str, constraints: list[str], cells: dict) -> dict:
    return {"format": "ovi-bench-scores/1", "name": name, "benchmark": "t2i-compbench",
            "categories": {c: {s: {"mean": v, "images": 20, "prompts": 2, "unscored": 0, "settings": {}}
                               for s, v in per.items()} for c, per in cells.items()},
            "primary": {"color": "blip-vqa", "complex": "3-in-1"},
            "scorers": {"3-in-1": {"requires": ["blip-vqa", "detector", "clip-score"]}}}


@pytest.fixture
def scored_runs(tmp_path) -> list[Path]:
    runs = []
    for name, cells in (("ovi", {"color": {"blip-vqa": 0.5, "clip-score": 0.3},
                                 "complex": {"3-in-1": 0.4, "blip-vqa": 0.9}}),
                        ("ovi+nn:0.5", {"color": {"blip-vqa": 0.6}, "spatial": {"detector": 0.2}})):
        run = tmp_path / name.replace(":", "-")
        run.mkdir()
        (run / "scores.json").write_text(json.dumps(_scores_doc(name, "ovi", [], cells)))
        runs.append(run)
    return runs


def test_table_formats(tmp_path, run_cli, scored_runs):
    r = run_cli("bench", "table", *scored_runs, "--csv")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == ("run,published,source,color:blip-vqa,color:blip-vqa:images,color:clip-score,"
                        "color:clip-score:images,spatial:detector,spatial:detector:images,complex:3-in-1,"
                        "complex:3-in-1:images")  # the paper's order; 3-in-1's parts are not columns
    assert lines[1].startswith("ovi,no,") and ",0.5,20,0.3,20,,,0.4,20" in lines[1]
    doc = json.loads(run_cli("bench", "table", *scored_runs, "--json", "--published").stdout)
    names = [row["name"] for row in doc["rows"]]
    assert names == ["ovi", "ovi+nn:0.5", "Kandinsky 2.2 prior (published)", "ECLIPSE prior (published)"]
    assert doc["rows"][3]["published"] and doc["rows"][3]["scores"]["color:blip-vqa"]["mean"] == 0.6119
    assert "spatial:detector" in doc["rows"][2]["scores"] and "texture:blip-vqa" not in doc["rows"][2]["scores"]
    md = run_cli("bench", "table", *scored_runs, "--markdown", "--published").stdout
    assert md.startswith("| run | color (blip-vqa) | color (clip-score) | spatial | complex |")
    assert "| *ECLIPSE prior (published)* | *0.6119* |" in md and "0.5000 (n=20)" in md
    wide = run_cli("bench", "table", *scored_runs, "--all", "--json").stdout
    assert "complex:blip-vqa" in wide
    plot = tmp_path / "bars.png"
    r = run_cli("bench", "table", *scored_runs, "--published", "--plot", plot)
    assert r.code == 0 and "ovi+nn:0.5" in r.stdout and "0.6119" in r.stdout
    assert Image.open(plot).size[0] > 100


def test_table_errors_and_same_names(tmp_path, run_cli, scored_runs):
    r = run_cli("bench", "table", tmp_path / "nothing")
    assert r.code == 2 and "does not exist" in r.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    r = run_cli("bench", "table", bare)
    assert r.code == 2 and "no scores.json: score it first with `ovi bench score" in r.stderr
    r = run_cli("bench", "table", *scored_runs, "--csv", "--json")
    assert r.code == 2 and "choose one of" in r.stderr
    copy = tmp_path / "again"
    copy.mkdir()
    (copy / "scores.json").write_text((scored_runs[0] / "scores.json").read_text())
    doc = json.loads(run_cli("bench", "table", scored_runs[0], copy, "--json").stdout)
    assert [r["name"] for r in doc["rows"]] == ["ovi (ovi)", "ovi (again)"]


def test_run_names_from_bench_json():
    from ovi_cli.bench.score import run_name

    assert run_name({"settings": {"prior": "ovi", "constraints": ["nn:0.5"]}}, "x") == "ovi+nn:0.5"
    assert run_name({"settings": {"prior": "ovi", "constraints": ["mahalanobis:0.009", "nn"]}}, "x") == \
        "ovi+mahalanobis:0.009+nn"
    assert run_name({"settings": {"prior": "textemb"}}, "x") == "textemb"
    assert run_name({}, "folder") == "folder" and run_name({"settings": "junk"}, "folder") == "folder"


def test_scorer_plugins_stay_light():
    code = ("import sys, ovi_plugins.scorers.plugin, ovi_plugins.toy.plugin; "
            "bad = [m for m in ('torch', 'transformers', 'numpy', 'PIL') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_third_party_scorer_in_the_docs_works(tmp_path, run_cli):
    import re
    import types

    # the scorer guide's complete example (the package examples/ovi-colourfulness-scorer, shown inline)
    docs = Path(__file__).resolve().parents[1] / "docs" / "plugins" / "scorer.md"
    code = re.search(r"<!-- example: [^\n]*/ovi_colourfulness/__init__.py -->\n```python\n(.*?)```",
                     docs.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 70
    module = types.ModuleType("my_scorers")
    exec(compile(code, str(docs), "exec"), module.__dict__)
    set_registry(load_registry(extra=[("colourfulness", module)]))
    try:
        run = make_run(tmp_path / "run", {"color": PROMPTS["color"][:1]})
        r = run_cli("bench", "score", run, "--scorers", "colourfulness", "-O", "colourfulness.scale=2", "-q")
        assert r.code == 0, r.stderr
        assert _json(run / "scores.json")["categories"]["color"]["colourfulness"]["mean"] > 0
        assert "colourfulness" in run_cli("bench", "table", run).stdout
    finally:
        set_registry(None)


def test_bench_json_categories_as_an_object_keep_their_order(tmp_path):
    from ovi_cli.bench.score import open_run

    run = make_run(tmp_path / "run", {"single": ["a red circle"], "binding": ["a red circle and a blue star"],
                                      "color": ["a red cup"]}, benchmark="toy")
    bench = json.loads((run / "bench.json").read_text())
    bench["categories"] = {"single": {"prompts": 1}, "binding": {"prompts": 1}, "color": {"prompts": 1}}
    (run / "bench.json").write_text(json.dumps(bench))
    assert open_run(run).categories == ["color", "single", "binding"]  # the paper's first, then bench.json's
