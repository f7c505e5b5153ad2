"""`ovi bench generate`: the official layout, bench.json, records, resume, refusals, shares, OVI per prompt.

Runs the shipped toy world (`--model toy`, offline) through the real CLI, with few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovi_cli.bench import layout
from ovi_cli.bench.plan import owned, plan_category
from ovi_cli.bench.runlog import RecordLog, create_exclusive_json, read_records
from ovi_cli.bench.suites import prompt_list_hash
from ovi_cli.distributed import Share
from ovi_plugins.toy.benchmark import toy_prompts

TOY = ["bench", "generate", "toy", "--model", "toy", "--steps", "3", "-k", "2", "--limit", "2", "--quiet"]


def _images(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("*/samples/*.png"))}


def _records(run: Path, category: str) -> list[dict]:
    lines = layout.records_path(run, category).read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"} for ln in lines]


def _one_error_line(res, *needles):
    assert res.code == 2, (res.code, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovi: error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One finished toy run (2 prompts x 2 images per category), made once for the module."""
    from ovi_cli.cli import main

    run = tmp_path_factory.mktemp("bench") / "run"
    try:
        main([*TOY, "--out", str(run)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return run


# ---- the plan (pure) ---------------------------------------------------------------------------
def _pairs(groups):
    return [[(u.prompt_index, u.image_index) for u in g.units] for g in groups]


def test_groups_per_image_cut_prompts_or_join_them():
    prompts = ["a", "b", "c"]
    small = plan_category("x", prompts, 5, 42, 2)  # batch < K: images of one prompt, 3 groups per prompt
    assert _pairs(small)[:3] == [[(0, 0), (0, 1)], [(0, 2), (0, 3)], [(0, 4)]]
    assert [g.number for g in small] == list(range(9))
    big = plan_category("x", prompts, 2, 42, 5)  # batch >= K: batch // K = 2 whole prompts per group
    assert _pairs(big) == [[(0, 0), (0, 1), (1, 0), (1, 1)], [(2, 0), (2, 1)]]
    u = big[1].units[1]
    assert (u.index, u.seed, u.ovi_seed, u.prompt) == (5, 43, 43, "c")  # i*K + j, seed + j
    assert big[0].ovi_rows == (("a", 42), ("a", 43), ("b", 42), ("b", 43))
    assert big[0].decode_chunks == ((0, 1, 2, 3),)


def test_groups_per_prompt_share_one_ovi_among_k_seeds():
    groups = plan_category("x", ["a", "b", "c"], 3, 7, 2, "prompt")
    assert _pairs(groups)[0] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    g = groups[0]
    assert g.ovi_rows == (("a", 7), ("b", 7))  # one OVI per prompt, from --seed
    assert g.unit_rows == (0, 0, 0, 1, 1, 1)
    assert [u.seed for u in g.units] == [7, 8, 9, 7, 8, 9] and {u.ovi_seed for u in g.units} == {7}
    assert g.decode_chunks == ((0, 1), (2, 3), (4, 5))  # decoded --batch images at a time


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shares_are_disjoint_cover_everything_and_ignore_the_limit(count):
    full = plan_category("color", [f"p{i}" for i in range(7)], 3, 0, 2)
    shares = [owned(full, Share(i, count)) for i in range(count)]
    numbers = sorted(g.number for s in shares for g in s)
    assert numbers == [g.number for g in full]  # each group exactly once
    limited = plan_category("color", [f"p{i}" for i in range(4)], 3, 0, 2)
    for i in range(count):  # a group belongs to the same share whatever --limit is
        assert {g.number for g in owned(limited, Share(i, count))} <= {g.number for g in shares[i]}


# ---- records and bench.json files ----------------------------------------------------------
def test_a_torn_last_record_line_is_cut_before_the_next_append(tmp_path):
    with RecordLog(tmp_path, "color", "part-00001-of-00001") as log:
        log.append({"index": 0, "prompt": "a"})
    part = layout.record_parts_dir(tmp_path, "color") / "part-00001-of-00001.jsonl"
    with open(part, "ab") as f:
        f.write(b'{"index": 1, "pro')  # killed in the middle of a write
    assert sorted(read_records(tmp_path, "color")) == [0]
    with RecordLog(tmp_path, "color", "part-00001-of-00001") as log:
        log.append({"index": 2, "prompt": "c"})
    assert part.read_text().splitlines() == ['{"index":0,"prompt":"a"}', '{"index":2,"prompt":"c"}']


def test_records_merge_parts_later_wins(tmp_path):
    layout.category_dir(tmp_path, "c").mkdir()
    layout.records_path(tmp_path, "c").write_text('{"index": 0, "v": "old"}\n{"index": 1, "v": "old"}\n')
    with RecordLog(tmp_path, "c", "part-00002-of-00002") as log:
        log.append({"index": 1, "v": "new"})
    assert {i: r["v"] for i, r in read_records(tmp_path, "c").items()} == {0: "old", 1: "new"}


def test_bench_json_is_created_once(tmp_path):
    path = tmp_path / "bench.json"
    assert create_exclusive_json(path, {"a": 1}) is True
    assert create_exclusive_json(path, {"a": 2}) is False
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary left


# ---- the run ---------------------------------------------------------------------------------
def test_toy_run_writes_the_official_layout(toy_run):
    for category in ("single", "binding"):
        prompts = toy_prompts(category)[:2]
        names = sorted(p.name for p in layout.samples_dir(toy_run, category).iterdir())
        parsed = sorted((n.split("_")[0], int(n.split("_")[-1][:-4])) for n in names)  # the official rules
        assert parsed == sorted((prompts[i], i * 2 + j) for i in range(2) for j in range(2))
        recs = _records(toy_run, category)
        assert [r["index"] for r in recs] == [0, 1, 2, 3]
        for r in recs:
            assert r["prompt"] == prompts[r["prompt_index"]] and r["index"] == r["prompt_index"] * 2 + r["image_index"]
            assert r["seed"] == r["ovi_seed"] == 42 + r["image_index"]
            assert r["file"] == f"samples/{r['prompt']}_{r['index']:06d}.png"
            assert 0 < r["text_cosine"] <= 1 and r["steps_used"] == 3 and "constraint_values" in r
            assert "history" not in r and "settings" not in r  # run-level facts live in bench.json
    bench = json.loads(layout.bench_json_path(toy_run).read_text())
    s = bench["settings"]
    assert (s["images_per_prompt"], s["seed"], s["ovi_per"], s["batch"], s["steps"], s["decoder"]) == \
        (2, 42, "image", 1, 3, "toy")
    assert bench["benchmark"] == "toy"
    assert bench["categories"]["binding"]["sha256"] == prompt_list_hash(toy_prompts("binding"))
    assert bench["identity"]["encoder_fingerprint"] == bench["models"]["encoder"]["fingerprint"]
    assert bench["models"]["versions"]["torch"]
    assert bench["progress"]["single"] == {"images": 4, "planned": 4, "prompts": 2, "records": 4}


def test_rerun_skips_finished_images_and_remakes_a_missing_one(run_cli, toy_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    before = _images(run)
    gone = sorted(layout.samples_dir(run, "single").iterdir())[1]
    gone.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("*/samples/*.png")}
    res = run_cli(*TOY, "--out", run, "--json")
    assert res.code == 0, res.stderr
    assert _images(run) == before  # remade bit for bit
    summary = json.loads(res.stdout)
    assert summary["run"] == str(run) and summary["written"] == 1 and summary["complete"] is True
    assert summary["categories"]["single"] == {"images": 4, "planned": 4}
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # nothing else touched


def test_an_image_without_its_record_is_made_again(run_cli, toy_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    parts = layout.record_parts_dir(run, "binding")
    for part in parts.iterdir():  # the records of index 3 never reached the disk
        lines = [ln for ln in part.read_text().splitlines() if json.loads(ln)["index"] != 3]
        part.write_text("".join(ln + "\n" for ln in lines))
    layout.records_path(run, "binding").unlink()
    res = run_cli(*TOY, "--out", run, "--categories", "binding")
    assert res.code == 0, res.stderr
    assert [r["index"] for r in _records(run, "binding")] == [0, 1, 2, 3]
    assert _records(run, "binding") == _records(toy_run, "binding")


def test_an_interrupt_leaves_no_half_image_and_the_rerun_completes(run_cli, toy_run, tmp_path, monkeypatch):
    from ovi_cli.pipeline import OviPipeline

    real = OviPipeline.decode
    calls = {"n": 0}

    def decode_then_interrupt(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third image is decoded
        return real(self, batch)

    monkeypatch.setattr(OviPipeline, "decode", decode_then_interrupt)
    run = tmp_path / "run"
    res = run_cli(*TOY, "--out", run)
    assert res.code == 130 and "interrupted" in res.stderr
    assert len(_images(run)) == 2
    assert not [p for p in run.rglob("*") if p.name.startswith(".")], "no temporary file left behind"
    assert len(read_records(run, "single")) == 2
    monkeypatch.setattr(OviPipeline, "decode", real)
    res = run_cli(*TOY, "--out", run)
    assert res.code == 0, res.stderr
    assert _images(run) == _images(toy_run)
    assert _records(run, "single") == _records(toy_run, "single")


def test_other_settings_into_the_same_run_are_refused_by_name(run_cli, toy_run, tmp_path):
    res = run_cli(*TOY, "--out", toy_run, "--steps", "4", "--seed", "1")
    _one_error_line(res, "was made with other settings", "seed 42 -> 1", "steps 3 -> 4", "new --out")
    res = run_cli(*TOY, "--out", toy_run, "--ovi-per", "prompt")
    _one_error_line(res, "ovi_per 'image' -> 'prompt'")
    mine = tmp_path / "mine.txt"
    mine.write_text("a red star\na blue circle\n")
    res = run_cli(*TOY, "--out", toy_run, "--prompt-file", f"single={mine}")
    _one_error_line(res, "prompts of single")


def test_inputs_are_checked_before_any_model_loads(run_cli, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a red star\na blue_circle\n")
    common = ["bench", "generate", "toy", "--encoder-model", str(tmp_path / "missing"), "--out", tmp_path / "r"]
    _one_error_line(run_cli(*common, "--prompt-file", f"single={bad}"), "'a blue_circle'", "prompt 2", "contains '_'")
    _one_error_line(run_cli(*common, "--categories", "single,colour"), "no category 'colour'", "single, binding")
    _one_error_line(run_cli(*common, "--prompt-file", "single"), "malformed --prompt-file")
    _one_error_line(run_cli(*common, "--prompt-file", f"single={tmp_path / 'nope.txt'}"), "is not a file")
    _one_error_line(run_cli(*common, "-k", "0"), "--images-per-prompt must be >= 1")
    _one_error_line(run_cli(*common, "--ovi-per", "batch"), "--ovi-per must be one of image, prompt")
    _one_error_line(run_cli(*common, "--shard", "3/2"), "--shard")
    _one_error_line(run_cli(*common, "--limit", "0"), "--limit must be >= 1")
    _one_error_line(run_cli("bench", "generate", "nope", "--out", tmp_path / "r"), "unknown benchmark 'nope'",
                    "t2i-compbench", "toy")
    _one_error_line(run_cli(*TOY, "--decoder", "embeds", "--out", tmp_path / "r"), "makes no images")
    _one_error_line(run_cli(*common), "encoder model folder", "does not exist")  # models: checked before writing
    assert not (tmp_path / "r").exists()


def test_a_prompt_file_replaces_a_category(run_cli, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("# my prompts\na red star\n\na blue circle\n")
    run = tmp_path / "run"
    res = run_cli(*TOY, "--out", run, "--categories", "single", "--prompt-file", f"single={mine}", "-k", "1")
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in layout.samples_dir(run, "single").iterdir()) == \
        ["a blue circle_000001.png", "a red star_000000.png"]
    cat = json.loads(layout.bench_json_path(run).read_text())["categories"]
    assert list(cat) == ["single"] and cat["single"]["source"] == str(mine.absolute())
    assert cat["single"]["sha256"] == prompt_list_hash(["a red star", "a blue circle"])


def test_the_t2i_compbench_lists_ship_with_their_license():
    from ovi_plugins.benchmarks import T2ICompBench, compbench_file

    bench = T2ICompBench()
    assert compbench_file("color").with_name("LICENSE").read_text().startswith("MIT License")
    counts = {c: len(bench.prompts(c)) for c in bench.categories}
    assert counts == dict.fromkeys(bench.categories, 300)
    assert bench.prompts("color")[0] == "a green bench and a blue bowl"  # CRLF lines read cleanly
    for c in bench.categories:
        for i, p in enumerate(bench.prompts(c)):
            layout.check_prompt(p, f"{c} {i}")  # every shipped prompt fits the official layout


def test_shards_into_one_run_equal_one_process_bit_for_bit(run_cli, toy_run, tmp_path):
    run = tmp_path / "run"
    for i in (2, 1):
        res = run_cli(*TOY, "--out", run, "--shard", f"{i}/2")
        assert res.code == 0, res.stderr
    assert _images(run) == _images(toy_run)
    for category in ("single", "binding"):
        assert _records(run, category) == _records(toy_run, category)
    parts = sorted(p.name for p in layout.record_parts_dir(run, "single").iterdir())
    assert parts == ["part-00001-of-00002.jsonl", "part-00002-of-00002.jsonl"]


def test_one_ovi_per_prompt_feeds_every_decoder_seed(run_cli, toy_run, tmp_path):
    run = tmp_path / "run"
    res = run_cli(*TOY, "--out", run, "--ovi-per", "prompt")
    assert res.code == 0, res.stderr
    recs = _records(run, "binding")
    assert [r["seed"] for r in recs] == [42, 43, 42, 43] and {r["ovi_seed"] for r in recs} == {42}
    # one embedding per prompt: the same numbers for both of its images
    assert recs[0]["text_cosine"] == recs[1]["text_cosine"] != recs[2]["text_cosine"]
    assert json.loads(layout.bench_json_path(run).read_text())["settings"]["ovi_per"] == "prompt"
    # image 0 starts OVI from --seed either way (same batch shapes at --batch 1), and the toy decoder
    # ignores the noise seed
    images, per_image = _images(run), _images(toy_run)
    first = [n for n in images if n.endswith("_000000.png") or n.endswith("_000002.png")]
    assert first and all(images[n] == per_image[n] for n in first)


def test_a_run_grows_with_more_categories_and_a_larger_limit(run_cli, toy_run, tmp_path):
    run = tmp_path / "run"
    res = run_cli(*TOY, "--limit", "1", "--categories", "binding", "--out", run)  # the last --limit wins
    assert res.code == 0, res.stderr
    assert list(json.loads(layout.bench_json_path(run).read_text())["categories"]) == ["binding"]
    assert len(_images(run)) == 2  # one prompt, two images
    res = run_cli(*TOY, "--out", run)
    assert res.code == 0, res.stderr
    bench = json.loads(layout.bench_json_path(run).read_text())
    assert sorted(bench["categories"]) == ["binding", "single"]
    assert {c: p["images"] for c, p in bench["progress"].items()} == {"single": 4, "binding": 4}
    assert _images(run) == _images(toy_run)


@pytest.mark.parametrize("out, extra, message", [
    ("afile", [], "--out 'afile' is a file, not a folder"),
    ("afile/sub", [], "'afile' is a file, not a folder"),
    ("/proc/ovi-run", [], "under /proc"),
    ("run", ["--height", "100000"], "--height must be <= 4096"),
    ("run", ["--seed", "99999999999999999999"], "--seed must be <="),
    ("run", ["--lr", "nan"], "--lr must be a finite number"),
])
def test_bad_output_locations_and_numbers_are_one_line_before_anything_loads(run_cli, tmp_path, monkeypatch,
                                                                            out, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a user's file")
    # a model that does not exist: a check made after loading would fail differently
    res = run_cli("bench", "generate", "toy", "--model", "toy", "--encoder-model", tmp_path / "nowhere",
                  "--out", out, "--limit", "1", "-k", "1", "--quiet", *extra)
    assert res.code == 2 and res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert (tmp_path / "afile").read_text() == "a user's file"
    assert not (tmp_path / "run").exists()
