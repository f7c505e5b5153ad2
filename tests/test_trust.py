"""Issue 22, first-hour trips: what a new user tripped on, each checked the way they met it (the CLI)."""

from __future__ import annotations

import io
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers.reliability import one_line_error

BOX = {chr(c) for c in range(0x2500, 0x2580)}  # box-drawing characters of Rich's tables


def assert_whole(output: str, texts: list[str]) -> None:
    """Every character of every text is in `output` (a table that folds cells keeps them; one that
    cuts drops some and writes an ellipsis)."""
    assert "…" not in output, output
    have = Counter(ch for ch in output if not ch.isspace() and ch not in BOX)
    want = Counter(ch for ch in "".join(texts) if not ch.isspace())
    missing = want - have
    assert not missing, (missing, output)


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8"))


# ---- a preset brings priors that work with it -------------------------------------------------
def test_compare_toy_with_default_priors_works_offline(run_cli, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli("compare", "a red star", "--model", "toy", "--steps", "5", "-o", out, "--json", "--quiet")
    assert res.code == 0, res.stderr
    table = json.loads(res.stdout.splitlines()[0])
    from ovi_plugins.toy.preset import ToyModels

    assert [r["prior"] for r in table["rows"]] == ToyModels.compare_priors.split(",")
    # an explicit --priors still wins over the preset's
    res = run_cli("compare", "a red star", "--model", "toy", "--steps", "5", "-o", tmp_path / "c2", "--json",
                  "--quiet", "--priors", "textemb")
    assert res.code == 0, res.stderr
    assert [r["prior"] for r in json.loads(res.stdout.splitlines()[0])["rows"]] == ["textemb"]


# ---- `-` is standard input --------------------------------------------------------------------
def test_gen_prompts_dash_reads_standard_input(run_cli, tmp_path, monkeypatch):
    _stdin(monkeypatch, "a red circle\n# a comment\na blue square\n")
    out = tmp_path / "gen"
    res = run_cli("gen", "--prompts", "-", "--model", "toy", "--steps", "3", "-o", out, "--quiet")
    assert res.code == 0, res.stderr
    sidecars = sorted(out.glob("*.json"))
    assert [json.loads(p.read_text())["prompt"] for p in sidecars] == ["a red circle", "a blue square"]
    assert sorted(p.name for p in out.glob("*.png")) == ["0000-a-red-circle.png", "0001-a-blue-square.png"]
    _stdin(monkeypatch, "\n# nothing\n")
    one_line_error(run_cli("gen", "--prompts", "-", "--model", "toy", "-o", tmp_path / "g2"), "holds no prompt")


def test_bench_prompt_file_dash_reads_standard_input(monkeypatch):
    from ovi_cli.bench.suites import get_benchmark, load_suite, parse_prompt_files
    from ovi_cli.errors import OviError

    bench = get_benchmark("toy")
    files = parse_prompt_files(["single=-"], bench.categories, "toy")
    _stdin(monkeypatch, "a red star\na blue circle\n")
    (suite,) = load_suite(bench, ["single"], files)
    assert suite.prompts == ("a red star", "a blue circle") and suite.source == "<standard input>"
    with pytest.raises(OviError, match="only one category"):
        parse_prompt_files(["single=-", "binding=-"], bench.categories, "toy")


# ---- inputs that are not regular files cannot hang ovi or fill its memory --------------------
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_prompt_files_that_are_not_regular_files_are_one_line(run_cli, tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "p.txt"
        os.mkfifo(path)  # no writer: a plain open() would block forever
    elif kind == "dev-zero":
        path = tmp_path / "zero.txt"
        path.symlink_to("/dev/zero")  # endless: a plain read() would grow without bound
    else:
        path = tmp_path / "dir.txt"
        path.mkdir()
    for cmd in (["gen", "--prompts", path, "--model", "toy", "-o", tmp_path / "o"],
                ["compare", "--prompts", path, "--model", "toy", "-o", tmp_path / "c"]):
        one_line_error(run_cli(*cmd), str(path))


def test_inputs_are_read_with_a_bound(tmp_path, monkeypatch):
    from ovi_cli.checks import read_input_bytes
    from ovi_cli.errors import OviError

    big = tmp_path / "big.txt"
    big.write_bytes(b"a red star\n" * 100)
    assert read_input_bytes(big, "prompt file", max_bytes=1100) == b"a red star\n" * 100
    with pytest.raises(OviError, match="larger than"):
        read_input_bytes(big, "prompt file", max_bytes=1099)
    _stdin(monkeypatch, "x" * 50)
    with pytest.raises(OviError, match="standard input is larger"):
        read_input_bytes("-", "prompt file", max_bytes=10)


def test_file_list_that_is_a_fifo_is_one_line(run_cli, tmp_path):
    import numpy as np

    emb = tmp_path / "e.npy"
    np.save(emb, np.ones((3, 64), np.float32))
    fifo = tmp_path / "names.txt"
    os.mkfifo(fifo)
    one_line_error(run_cli("build-stats", "--from-embeddings", emb, "--file-list", fifo, "--model", "toy",
                           "--out", tmp_path / "s"), "not a regular file")


# ---- `ovi stats list` shows every store ovi would use -----------------------------------------
def test_stats_list_shows_the_toy_presets_store(run_cli, tmp_path, monkeypatch):
    from ovi_plugins.toy.preset import toy_paths

    monkeypatch.setenv("OVI_HOME", str(tmp_path / "home"))  # no store of one's own
    res = run_cli("stats", "list", "--json")
    assert res.code == 0, res.stderr
    rows = json.loads(res.stdout)
    toy = [r for r in rows if r["preset"] == "toy"]
    assert len(toy) == 1 and Path(toy[0]["path"]).resolve() == toy_paths()["stats"].resolve()
    res = run_cli("stats", "list")
    assert res.code == 0 and "--model toy (preset)" in res.stdout and "no statistics stores" not in res.stdout


# ---- help that states numbers takes them from the code ----------------------------------------
def test_build_stats_help_numbers_come_from_the_code(run_cli, monkeypatch):
    from ovi_stats import build
    from ovi_stats.index import FLAT_MAX

    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(run_cli("build-stats", "--help").stdout.replace("│", " ").split())
    assert f"exact flat up to {FLAT_MAX:,} images" in text
    assert f"(default {build.DEFAULT_BATCH_SIZE};" in text
    monkeypatch.setattr(os, "cpu_count", lambda: 1000)
    assert f"at most {build.default_workers()})" in text
    from ovi_cli.commands.stats import code_constant

    assert code_constant("ovi_stats.index", "FLAT_MAX") == FLAT_MAX
    assert code_constant("ovi_stats.index", "NO_SUCH_NAME") is None
    assert code_constant("no_such_module_here", "X") is None


# ---- tables keep their full text: piped, and on a narrow terminal -----------------------------
@pytest.mark.parametrize("columns", [None, "40"])
def test_plugins_table_is_never_cut(run_cli, monkeypatch, columns):
    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    rows = json.loads(run_cli("plugins", "--json").stdout)["plugins"]
    res = run_cli("plugins")  # stdout is captured: not a terminal, as in `ovi plugins | cat`
    assert res.code == 0
    assert_whole(res.stdout, [t for r in rows for t in (r["name"], r["kind"], r["description"])])
    if not columns:  # piped: one line per row, so grep finds a whole row
        for r in rows:
            assert any(r["name"] in ln and r["description"] in ln for ln in res.stdout.splitlines()), r["name"]


def test_compare_stats_list_and_bench_tables_are_never_cut_at_40_columns(run_cli, monkeypatch, capsys):
    from rich.console import Console

    from ovi_cli.bench.table import Cell, Row, Table
    from ovi_cli.commands.compare import render_table
    from ovi_cli.console import print_bench_table, print_table

    monkeypatch.setenv("COLUMNS", "40")
    rows = [{"prior": "textemb", "text_cosine": 1.0, "cosine": {"toy-prior": 0.91}, "norm": 11.9, "seconds": 0.01},
            {"prior": "ovi+mahalanobis:0.03", "text_cosine": 0.93, "cosine": {"toy-prior": 0.96},
             "mahalanobis": 11.38, "nn_cosine": 0.86, "norm": 11.2, "seconds": 0.13}]
    buf = io.StringIO()
    print_table(render_table(rows, ["toy-prior"], "a red star and a blue square", True), Console(file=buf))
    assert_whole(buf.getvalue(), ["textemb", "ovi+mahalanobis:0.03", "cos toy-prior", "mahalanobis", "0.9100",
                                  "11.38", "a red star and a blue square"])
    res = run_cli("stats", "list")
    assert res.code == 0
    assert_whole(res.stdout, ["--model toy (preset)", "flat"])
    table = Table([("color", "blip-vqa"), ("spatial", "detector")],
                  [Row("ovi+mahalanobis:0.03", {("color", "blip-vqa"): Cell(0.5, 10, 5)}),
                   Row("textemb-with-a-long-name", {("spatial", "detector"): Cell(0.25, 10, 5)})])
    capsys.readouterr()
    print_bench_table(table, "ovi bench table: 2 run(s)")
    assert_whole(capsys.readouterr().out, ["ovi+mahalanobis:0.03", "textemb-with-a-long-name", "blip-vqa",
                                           "detector", "spatial", "0.500", "0.250"])


# ---- `-o` without .png ---------------------------------------------------------------------------
def test_gen_out_without_png_appends_it_and_other_image_suffixes_are_refused(run_cli, tmp_path):
    res = run_cli("gen", "a red circle", "--model", "toy", "--steps", "3", "-o", tmp_path / "s5", "--quiet")
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s5.json", "s5.png"]
    res = run_cli("gen", "a red circle", "--model", "toy", "--steps", "3", "-o", tmp_path / "v1.2", "--quiet")
    assert res.code == 0 and (tmp_path / "v1.2.png").is_file() and (tmp_path / "v1.2.json").is_file()
    one_line_error(run_cli("gen", "a red circle", "--model", "toy", "-o", tmp_path / "s.jpg"), "PNG")


# ---- scorer batches are bounded by memory -----------------------------------------------------
def test_blip_scores_a_batch_too_big_for_memory_in_parts_with_one_warning(scorer_models, tmp_path, monkeypatch):
    import torch

    from ovi_cli.api import ScoreItem, ScorerContext
    from ovi_plugins.scorers import blip_vqa
    from ovi_stats import matmul_search

    warned: list[str] = []
    from ovi_cli.reporter import WarnReporter

    s = blip_vqa.BlipVqa(ScorerContext(device=torch.device("cpu"), nlp="rules", reporter=WarnReporter(warned.append),
                                       options={"model": str(scorer_models["blip"]), "image_size": 64,
                                                "first_token": "enc"}))
    s.load()
    items = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        from PIL import Image

        Image.new("RGB", (40, 40), (50 * i, 120, 200)).save(path)
        items.append(ScoreItem(path, path.name, "a green bench and a blue bowl", i, "color"))
    whole = s.score(items, {})
    assert not warned
    v = s.model.config.vision_config
    per_image = blip_vqa.blip_bytes_per_image(64, v.patch_size, v.hidden_size, v.num_attention_heads, 2)
    assert per_image == 4 * (3 * v.num_attention_heads * 65 ** 2 + 16 * 65 * v.hidden_size + 3 * 64 * 64
                             + 2 * 65 * v.hidden_size)  # (64 / 8)^2 + 1 = 65 tokens
    calls = []
    real = s._score_pass
    monkeypatch.setattr(s, "_score_pass", lambda part: calls.append(len(part)) or real(part))
    monkeypatch.setattr(matmul_search, "free_bytes", lambda device: int(2.5 * per_image / blip_vqa.MEMORY_FRACTION))
    parts = s.score(items, {})
    assert calls == [2, 2, 1] and [r.score for r in parts] == [r.score for r in whole]
    assert len(warned) == 1 and "scoring 2 at a time" in warned[0] and "64 px" in warned[0]
    s.score(items, {})
    assert len(warned) == 1  # once per run


def test_toy_prompt_counts_in_help_texts_are_the_codes(run_cli, monkeypatch):
    from ovi_cli.bench.suites import get_benchmark
    from ovi_cli.plugins import get_registry

    bench = get_benchmark("toy")
    n = {c: len(bench.prompts(c)) for c in bench.categories}
    description = get_registry().entries["benchmark"]["toy"].cls.description
    assert all(f"{c} ({k})" in description for c, k in n.items()), (description, n)
    monkeypatch.setenv("COLUMNS", "400")
    text = " ".join(run_cli("eval", "toy", "--help").stdout.replace("│", " ").split())
    assert f"{n['single']} single and {n['binding']} binding" in text


def test_bench_plot_legend_covers_no_bar():
    """The toy eval plot's legend covered the `real` bar (the first, tallest one)."""
    from ovi_cli.bench.table import Cell, Row, Table, plot_figure

    cols = [("single", "oracle"), ("single", "clip-score"), ("binding", "oracle"), ("binding", "clip-score")]
    names = ["real", "textemb", "ovi", "ovi+mahalanobis:0.003", "ovi+mahalanobis:0.03", "ovi+mahalanobis:1",
             "ovi+nn", "toy-prior"]
    measured = [[1.0, 0.6263, 1.0, 0.8197], [0.6667, 0.5666, 0.5833, 0.8043], [0.6667, 0.572, 0.6042, 0.8033],
                [0.6667, 0.5866, 0.625, 0.8007], [0.6667, 0.6378, 0.625, 0.7926], [0.0, 0.1668, 0.1458, 0.2172],
                [0.4167, 0.6558, 0.5, 0.7913], [0.4167, 0.5654, 0.6458, 0.8068]]  # docs/toy.md's table
    rows = [Row(n, {c: Cell(v, 12, 12) for c, v in zip(cols, vs)}) for n, vs in zip(names, measured)]
    fig = plot_figure(Table(cols, rows), "ovi eval toy")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in ax.patches if p.get_height() > 0]
    assert len(bars) == len(names) * len(cols) - 1  # one bar is 0
    assert not any(legend.overlaps(b) for b in bars)


@pytest.mark.parametrize("which", ["detector", "clip-score"])
def test_detector_and_clip_score_also_score_a_batch_too_big_for_memory_in_parts(scorer_models, tmp_path, monkeypatch,
                                                                                which):
    """Issue 22: every built-in model scorer bounds its batches by memory (OWLv2 reads 960 px images)."""
    import torch
    from PIL import Image

    from ovi_cli.api import ScoreItem, ScorerContext
    from ovi_cli.reporter import WarnReporter
    from ovi_plugins.scorers import clip_score, common, detector
    from ovi_stats import matmul_search

    warned: list[str] = []
    reporter = WarnReporter(warned.append)
    if which == "detector":
        s = detector.Detector(ScorerContext(device=torch.device("cpu"), nlp="rules", reporter=reporter,
                                            options={"model": str(scorer_models["owl"]), "threshold": 0.0,
                                                     "nms": 1.0, "template": "a photo of a {}"}))
        prompt, category, method = "a giraffe next to a lamp", "spatial", "detect"
    else:
        s = clip_score.ClipScore(ScorerContext(device=torch.device("cpu"), reporter=reporter,
                                               options={"model": str(scorer_models["clip"])}))
        prompt, category, method = "A cat is playing with a toy.", "non_spatial", "embed"
    s.load()
    items = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 40), (50 * i, 120, 200)).save(path)
        items.append(ScoreItem(path, path.name, prompt, i, category))
    whole = s.score(items, {})
    assert not warned
    v = s.model.config.vision_config
    per_image = common.vit_bytes_per_image(v.image_size, v.patch_size, v.hidden_size, v.num_attention_heads)
    calls = []
    real = getattr(s, method)
    monkeypatch.setattr(s, method, lambda images, *a: calls.append(len(images)) or real(images, *a))
    monkeypatch.setattr(matmul_search, "free_bytes", lambda device: int(2.5 * per_image / common.MEMORY_FRACTION))
    parts = s.score(items, {})
    assert calls == [2, 2, 1]
    assert [r.score for r in parts] == pytest.approx([r.score for r in whole], abs=1e-6)
    assert len(warned) == 1 and "scoring 2 at a time" in warned[0] and s.name in warned[0]
