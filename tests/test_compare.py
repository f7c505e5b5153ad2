"""`ovi compare` and `--plot`: parsing, the table's maths, and runs on tiny hub-layout models."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ovi_cli.compare import parse_priors
from ovi_cli.compare_report import comparison_rows, grid_size, summary_rows
from ovi_cli.encoders import Encoders
from ovi_cli.errors import OviError
from tests.helpers import tiny_priors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    return tiny_priors.session_repos(tmp_path_factory)


@pytest.fixture(autouse=True)
def _ovi_home(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_HOME", str(tmp_path / "ovi-home"))  # never read a user's stores


def _model_args(repos):
    return ["--encoder-model", str(repos["kandinsky"]), "--decoder-model", str(repos["decoder"]),
            "--eclipse-model", str(repos["eclipse"]), "--height", "32", "--width", "32",
            "--decoder-steps", "2", "--steps", "5", "--prior-steps", "2", "--device", "cpu", "--quiet"]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()


# ---- parsing ------------------------------------------------------------------------------------
def test_parse_priors_subsets_and_constraints():
    choices = parse_priors("textemb, ovi,ovi+mahalanobis,ovi+nn:0.5,eclipse,kandinsky")
    assert [c.label for c in choices] == ["textemb", "ovi", "ovi+mahalanobis", "ovi+nn:0.5", "eclipse", "kandinsky"]
    assert choices[2].prior == "ovi" and choices[2].constraints == ("mahalanobis",)
    assert choices[3].constraints == ("nn:0.5",)
    assert [c.label for c in parse_priors("eclipse")] == ["eclipse"]
    assert len({c.slug for c in choices}) == len(choices)


@pytest.mark.parametrize("text, message", [
    ("textemb,bogus", "unknown prior 'bogus'"),
    ("ovi+bogus", "unknown constraint 'bogus'"),
    ("textemb+nn", "takes no constraints"),
    ("ovi,ovi", "twice"),
    ("", "empty"),
    ("ovi,,textemb", "empty entry"),
    ("ovi+nn:x", "not a number"),
])
def test_parse_priors_errors(text, message):
    with pytest.raises(OviError, match=message):
        parse_priors(text)


def test_cli_unknown_prior_is_one_line(run_cli, tmp_path):
    res = run_cli("compare", "a cat", "--priors", "textemb,dalle", "--out", tmp_path / "c")
    assert res.code == 2
    assert res.stderr.startswith("ovi: error: unknown prior 'dalle' in --priors; available:")
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "c").exists()


# ---- the table's maths --------------------------------------------------------------------------
def test_comparison_rows_exact_values():
    embeds = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    rows = comparison_rows(["a", "b", "c"], embeds, torch.tensor([1.0, 0.0]), [0.5, 1.0, 2.0])
    assert [r["prior"] for r in rows] == ["a", "b", "c"]
    assert [r["text_cosine"] for r in rows] == pytest.approx([1.0, 0.0, math.sqrt(0.5)])
    assert rows[0]["cosine"] == pytest.approx({"a": 1.0, "b": 0.0, "c": math.sqrt(0.5)})
    assert rows[2]["cosine"]["b"] == pytest.approx(math.sqrt(0.5))
    assert [r["norm"] for r in rows] == pytest.approx([3.0, 2.0, math.sqrt(2.0)])
    assert [r["seconds"] for r in rows] == [0.5, 1.0, 2.0]
    assert rows[0]["mahalanobis"] is None and rows[0]["nn_cosine"] is None


def test_summary_rows_are_means_per_prior():
    t1 = comparison_rows(["a", "b"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 0.0]), [1.0, 3.0])
    t2 = comparison_rows(["a", "b"], torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.tensor([1.0, 0.0]), [2.0, 5.0])
    summary = summary_rows([t1, t2], ["a", "b"])
    a, b = summary
    assert a["prompts"] == 2 and a["text_cosine"] == pytest.approx((1.0 + math.sqrt(0.5)) / 2)
    assert a["cosine"]["b"] == pytest.approx((0.0 + math.sqrt(0.5)) / 2)
    assert b["seconds"] == pytest.approx(4.0) and b["norm"] == pytest.approx(1.5)
    assert a["mahalanobis"] is None


# ---- runs on tiny models ------------------------------------------------------------------------
def test_compare_grid_table_and_plot(run_cli, repos, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli("compare", "a red car on a beach", "--priors", "textemb,ovi,eclipse,kandinsky",
                  *_model_args(repos), "--out", out, "--plot")
    assert res.code == 0, res.stderr
    labels = ["textemb", "ovi", "eclipse", "kandinsky"]

    # one labelled grid, one cell per prior, in the order given
    with Image.open(out / "grid.png") as grid:
        assert grid.size == grid_size(4, 32, 32)
        assert json.loads(grid.text["ovi:priors"]) == labels
    for lab in labels:
        with Image.open(out / f"{lab}.png") as im:
            assert im.size == (32, 32)

    # the table, recomputed from the saved embeddings
    saved = load_file(str(out / "embeddings.safetensors"))
    text = saved["text_embeds"][0]
    rows = _read_csv(out / "table.csv")
    assert [r["prior"] for r in rows] == labels
    assert "mahalanobis" not in rows[0]  # no store given, no constrained prior: no such columns
    for r in rows:
        e = saved[r["prior"]][0]
        assert float(r["text_cosine"]) == pytest.approx(float(torch.cosine_similarity(e, text, dim=0)), abs=1e-5)
        assert float(r["norm"]) == pytest.approx(float(e.norm()), rel=1e-5)
        for other in labels:
            cos = float(torch.cosine_similarity(e, saved[other][0], dim=0))
            assert float(r[f"cos_{other}"]) == pytest.approx(cos, abs=1e-5)
        assert float(r["seconds"]) >= 0
    assert float(rows[0]["text_cosine"]) == pytest.approx(1.0, abs=1e-5)  # textemb is the text embedding
    table = json.loads((out / "table.json").read_text())
    assert table["priors"] == labels and table["seed"] == 0
    assert [r["text_cosine"] for r in table["rows"]] == pytest.approx([float(r["text_cosine"]) for r in rows])

    # the plot: a valid PNG and its raw values, OVI's cosine to the text and to the baselines
    _assert_png(out / "plot.png")
    hist = _read_csv(out / "history.csv")
    assert {"run", "step", "text_cosine", "loss", "cos_eclipse", "cos_kandinsky"} <= set(hist[0])
    assert [h["run"] for h in hist] == ["ovi"] * 5 and [int(h["step"]) for h in hist] == list(range(5))

    # the same decoder seed as `gen`: the textemb cell is `gen --prior textemb`'s image, eclipse's
    # embedding is `gen --prior eclipse`'s
    g = tmp_path / "g.png"
    res = run_cli("gen", "a red car on a beach", "--prior", "textemb", *_model_args(repos)[:4],
                  "--height", "32", "--width", "32", "--decoder-steps", "2", "--device", "cpu", "--quiet", "--out", g)
    assert res.code == 0, res.stderr
    a = np.asarray(Image.open(g), dtype=np.int16)
    b = np.asarray(Image.open(out / "textemb.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    ge = tmp_path / "ge.png"
    res = run_cli("gen", "a red car on a beach", "--prior", "eclipse", "--prior-model", str(repos["eclipse"]),
                  *_model_args(repos)[:4], "--decoder", "embeds", "--device", "cpu", "--quiet", "--out", ge)
    assert res.code == 0, res.stderr
    assert torch.allclose(load_file(str(ge.with_suffix(".safetensors")))["image_embeds"][0], saved["eclipse"][0])


def test_compare_prompts_file_grid_per_prompt_and_summary(run_cli, repos, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red car\n# a comment\n\ntwo green birds\n")
    out = tmp_path / "many"
    res = run_cli("compare", "--prompts", prompts, "--priors", "textemb,eclipse", *_model_args(repos),
                  "--out", out, "--seed", "3")
    assert res.code == 0, res.stderr
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["0000-a-red-car", "0001-two-green-birds"]
    tables = []
    for i, folder in enumerate(folders):
        with Image.open(folder / "grid.png") as grid:
            assert grid.size == grid_size(2, 32, 32)
        assert json.loads((folder / "table.json").read_text())["seed"] == 3 + i
        tables.append(_read_csv(folder / "table.csv"))
    summary = _read_csv(out / "summary.csv")
    assert [r["prior"] for r in summary] == ["textemb", "eclipse"]
    for k, row in enumerate(summary):
        assert row["prompts"] == "2"
        for col in ("text_cosine", "cos_textemb", "cos_eclipse", "norm", "seconds"):
            mean = (float(tables[0][k][col]) + float(tables[1][k][col])) / 2
            assert float(row[col]) == pytest.approx(mean, rel=1e-6, abs=1e-9)
    data = json.loads((out / "summary.json").read_text())
    assert data["prompts"] == ["a red car", "two green birds"] and data["seeds"] == [3, 4]


def test_compare_with_a_store_adds_mahalanobis_and_nn(run_cli, repos, tmp_path):
    from ovi_stats.store import open_store, write_store

    enc = Encoders.load(str(repos["kandinsky"]), device="cpu")
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 16)).astype(np.float32) * 2.0
    store_dir = tmp_path / "store"
    write_store(store_dir, emb, [f"img{i}.png" for i in range(40)],
                encoder={"source": str(repos["kandinsky"]), "fingerprint": enc.fingerprint()})
    out = tmp_path / "cmp"
    res = run_cli("compare", "a red car", "--priors", "textemb,ovi+mahalanobis,ovi+nn", *_model_args(repos),
                  "--decoder", "embeds", "--stats", store_dir, "--out", out, "--json", "--plot")
    assert res.code == 0, res.stderr
    assert not (out / "grid.png").exists()  # the embeds decoder makes no images
    # the plot shows each constraint's term, per OVI entry
    _assert_png(out / "plot.png")
    hist = _read_csv(out / "history.csv")
    assert {"mahalanobis", "nn"} <= set(hist[0])
    assert {h["run"] for h in hist} == {"ovi+mahalanobis", "ovi+nn"}
    maha_rows = [h for h in hist if h["run"] == "ovi+mahalanobis"]
    assert all(h["mahalanobis"] and not h["nn"] for h in maha_rows)
    table = json.loads(res.stdout.strip().splitlines()[0])
    assert table["priors"] == ["textemb", "ovi+mahalanobis", "ovi+nn"]
    store = open_store(str(store_dir))
    saved = load_file(str(out / "embeddings.safetensors"))
    mean = np.asarray(store.mean, dtype=np.float64)
    chol = np.asarray(store.precision_cholesky, dtype=np.float64)
    stored = np.asarray(store.embeddings, dtype=np.float64)
    stored_n = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    rows = _read_csv(out / "table.csv")
    assert {"mahalanobis", "nn_cosine", "nn_file"} <= set(rows[0])
    for r in rows:
        e = saved[r["prior"]][0].double().numpy()
        d = e - mean
        assert float(r["mahalanobis"]) == pytest.approx(math.sqrt(d @ chol @ chol.T @ d), rel=1e-5)
        cos = stored_n @ (e / np.linalg.norm(e))
        assert float(r["nn_cosine"]) == pytest.approx(cos.max(), abs=1e-4)
        assert r["nn_file"] == f"img{int(cos.argmax())}.png"


def test_gen_plot_writes_png_and_csv(run_cli, repos, tmp_path):
    out = tmp_path / "p.png"
    res = run_cli("gen", "a red car", "--prior", "ovi", "--steps", "6", *_model_args(repos)[:2],
                  "--decoder", "embeds", "--device", "cpu", "--quiet", "--plot", "--out", out)
    assert res.code == 0, res.stderr
    _assert_png(tmp_path / "p.plot.png")
    hist = _read_csv(tmp_path / "p.history.csv")
    assert len(hist) == 6 and {"text_cosine", "loss"} <= set(hist[0])
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert [float(h["text_cosine"]) for h in hist] == pytest.approx(sidecar["history"]["text_cosine"])
    assert sidecar["files"]["plot"] == str(tmp_path / "p.plot.png")
    assert sidecar["files"]["history"] == str(tmp_path / "p.history.csv")
    # a prior without per-step history: a warning, no plot
    res = run_cli("gen", "a red car", "--prior", "textemb", *_model_args(repos)[:2], "--decoder", "embeds",
                  "--device", "cpu", "--quiet", "--plot", "--out", tmp_path / "t.png")
    assert res.code == 0, res.stderr
    assert "no per-step history" in res.stderr
    assert not (tmp_path / "t.plot.png").exists()
