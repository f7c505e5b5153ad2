"""`ovi compare --preference`: per-image preference scores of every prior's image, on the toy world with
tiny random scorer models in their official layouts; the numbers are those `ovi bench score`'s scorers
give the written PNG and the prompt."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from ovi_cli.compare_report import summary_rows, table_csv
from ovi_cli.errors import OviError

SCORERS = ("pickscore", "hps", "imagereward", "clip-score")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import BertTokenizer, CLIPTokenizer

    from tests.helpers import tiny_preference, tiny_scorers

    root = tmp_path_factory.mktemp("preference")
    clip = tiny_scorers.make_clip_repo(root / "clip")
    hps = tiny_preference.make_hps_repo(root / "HPSv2", len(CLIPTokenizer.from_pretrained(clip)))
    tiny_scorers.write_blip_tokenizer(root / "bert")
    ir = tiny_preference.make_imagereward_repo(root / "ImageReward", len(BertTokenizer.from_pretrained(root / "bert")))
    return {"pickscore": {"model": clip, "processor": clip},
            "hps": {"model": hps, "processor": clip, "vision_heads": 4, "text_heads": 4},
            "imagereward": {"model": ir, "tokenizer": root / "bert", "vision_heads": 4}}


def _option_flags(models) -> list[str]:
    return [f for name, opts in models.items() for k, v in opts.items() for f in ("--option", f"{name}.{k}={v}")]


def _toy(*args) -> list[str]:
    return ["--model", "toy", "--priors", "textemb,ovi", "--steps", "3", "--device", "cpu", *map(str, args)]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _bench_scores(models, images, prompt, encoder_model):
    """What `ovi bench score`'s scorers (built by its own builder) give each PNG against `prompt`."""
    from ovi_cli.api import ScoreItem
    from ovi_cli.bench.score import ScoreRequest, build_scorers, registry_scorers
    from ovi_cli.plugins import get_registry
    from ovi_cli.reporter import Reporter

    request = ScoreRequest(scorers=list(SCORERS), options={n: {k: str(v) for k, v in o.items()}
                                                            for n, o in models.items()},
                           encoder_model=encoder_model)
    scorers = build_scorers(SCORERS, registry_scorers(get_registry()), request, torch.device("cpu"), Reporter())
    items = [ScoreItem(path=p, name=p.name, prompt=prompt, index=0, category="non_spatial") for p in images]
    out = {}
    for name, s in scorers.items():
        s.load()
        out[name] = [r.score for r in s.score(items, {})]
    return out


def test_compare_adds_one_column_per_scorer_equal_to_bench_scores(models, tmp_path, run_cli):
    from ovi_cli.presets import apply_model
    from ovi_cli.settings import GenSettings

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "cmp"
    res = run_cli("compare", "--prompts", prompts, *_toy("--out", out, "--preference", ",".join(SCORERS), "--json"),
                  *_option_flags(models))
    assert res.code == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    tables, summary = lines[:2], lines[2]
    toy_clip = apply_model(GenSettings(), "toy").encoder_model  # clip-score reads the preset's CLIP, as in bench
    for table in tables:
        folder = Path(table["files"]["table_json"]).parent
        assert folder.parent == out
        on_disk = json.loads((folder / "table.json").read_text())
        assert on_disk["rows"] == table["rows"]
        assert set(on_disk["preference"]["scorers"]) == set(SCORERS)
        assert on_disk["preference"]["scorers"]["pickscore"]["options"]["model"] == str(models["pickscore"]["model"])
        rows = _read_csv(folder / "table.csv")
        assert list(rows[0])[-len(SCORERS) - 2:] == [*SCORERS, "norm", "seconds"]
        images = [folder / f"{p}.png" for p in ("textemb", "ovi")]
        want = _bench_scores(models, images, table["prompt"], toy_clip)
        for name in SCORERS:
            got = [r["preference"][name] for r in table["rows"]]
            assert got == pytest.approx(want[name], rel=1e-6, abs=1e-7), name
            assert [float(r[name]) for r in rows] == got
            assert len(set(got)) == 2  # two different images, two scores
    means = {r["prior"]: r["preference"] for r in summary["summary"]}
    for k, prior in enumerate(("textemb", "ovi")):
        for name in SCORERS:
            assert means[prior][name] == pytest.approx(sum(t["rows"][k]["preference"][name] for t in tables) / 2)
    assert [float(r["pickscore"]) for r in _read_csv(out / "summary.csv")] == \
        pytest.approx([means[p]["pickscore"] for p in ("textemb", "ovi")])


def test_the_rich_table_shows_the_scorer_columns(models, tmp_path, run_cli):
    res = run_cli("compare", "a red circle", *_toy("--out", tmp_path / "c", "--preference", "pickscore"),
                  *_option_flags({"pickscore": models["pickscore"]}))
    assert res.code == 0, res.stderr
    shown = res.stdout + res.stderr  # the table goes with the progress display
    assert "pickscore" in shown and "hps" not in shown
    # without --preference: no preference column, key or section
    res = run_cli("compare", "a red circle", *_toy("--out", tmp_path / "d", "--quiet"))
    assert res.code == 0, res.stderr
    doc = json.loads((tmp_path / "d" / "table.json").read_text())
    assert "preference" not in doc and all("preference" not in r for r in doc["rows"])
    assert "pickscore" not in (tmp_path / "d" / "table.csv").read_text()


@pytest.mark.parametrize("args, message", [
    (("--preference", "nope"), "unknown scorer 'nope'"),
    (("--preference", "blip-vqa"), "needs a benchmark category"),
    (("--preference", "3-in-1"), "combines other scorers"),
    (("--preference", " , "), "--preference is empty"),
    (("--preference", "pickscore", "--decoder", "embeds"), "decoder 'embeds' makes none"),
    (("--preference", "pickscore", "--option", "pickscore.nope=1"), "'pickscore' has no option 'nope'"),
    (("--preference", "pickscore"), "hf download"),  # the hub id, offline: the one-line advice
    (("--option", "pickscore.model=DIR"), "pickscore is a scorer that this compare does not run"),
    (("--preference", "hps", "--option", "pickscore.model=DIR"), "add it to --preference"),
    (("--preference", "imagereward"), "'google-bert/bert-base-uncased' (then --option imagereward.tokenizer DIR)"),
])
def test_bad_preference_is_one_line_before_any_model_loads(args, message, tmp_path, run_cli, monkeypatch):
    from ovi_cli.plugins import get_registry

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded")

    registry = get_registry()
    for kind, method in (("encoder_family", "load_encoders"), ("scorer", "load")):  # every check comes first
        for name in registry.names(kind):
            monkeypatch.setattr(registry.get(kind, name), method, never)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = run_cli("compare", "a red circle", *_toy("--out", tmp_path / "c", "--quiet", *args))
    assert res.code != 0
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_scorer_options_leave_the_run_settings(models):
    from ovi_cli.compare_preference import preference_request
    from ovi_cli.settings import GenSettings

    settings = GenSettings(options={"pickscore": {"model": "DIR"}, "nn": {"k": 3}})
    rest, request = preference_request("pickscore, hps,pickscore", settings, encoder_model="CLIP")
    assert rest.options == {"nn": {"k": 3}} and settings.options["pickscore"] == {"model": "DIR"}
    assert request.scorers == ["pickscore", "hps"] and request.options == {"pickscore": {"model": "DIR"}}
    assert request.encoder_model == "CLIP"
    assert preference_request(None, GenSettings(options={"nn": {"k": 3}}))[1] is None
    with pytest.raises(OviError, match="pickscore is a scorer that this compare does not run"):
        preference_request(None, settings)


def test_report_columns_and_means_of_preference_scores():
    rows = [[{"prior": "a", "text_cosine": 1.0, "cosine": {"a": 1.0}, "preference": {"hps": 0.25, "pickscore": 20.0},
              "norm": 1.0, "seconds": 0.0}],
            [{"prior": "a", "text_cosine": 0.5, "cosine": {"a": 1.0}, "preference": {"hps": 0.75, "pickscore": 22.0},
              "norm": 3.0, "seconds": 0.0}]]
    text = table_csv(rows[0], ["a"], False, preference=["pickscore", "hps"])
    assert text.splitlines() == ["prior,text_cosine,cos_a,pickscore,hps,norm,seconds", "a,1.0,1.0,20.0,0.25,1.0,0.0"]
    (mean,) = summary_rows(rows, ["a"])
    assert mean["preference"] == {"hps": 0.5, "pickscore": 21.0} and mean["norm"] == 2.0
    assert "preference" not in summary_rows([[{k: v for k, v in rows[0][0].items() if k != "preference"}]], ["a"])[0]
