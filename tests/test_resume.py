"""Resuming into finished results: the one "which settings differ" helper, and `ovi gen --prompts` using it."""

from __future__ import annotations

import json

import pytest

from ovi_cli.errors import OviError
from ovi_cli.resume import describe_differences, refuse_if_different, settings_differences

PROMPTS = ["a red cube on a table", "two dogs in the snow", "an old blue car"]


def test_differences_name_nested_settings_and_ignore_the_device():
    old = {"steps": 500, "lr": 0.02, "device": "cuda:0", "options": {"nn": {"k": 3}}, "constraints": ["nn"]}
    new = {"steps": 300, "lr": 0.02, "device": "cuda:1", "options": {"nn": {"k": 5}, "kandinsky": {"steps": 25}},
           "constraints": ["nn"]}
    assert settings_differences(old, new) == [
        ("options.kandinsky.steps", "<unset>", 25), ("options.nn.k", 3, 5), ("steps", 500, 300)]
    assert describe_differences(settings_differences(old, new)) == \
        "options.kandinsky.steps <unset> -> 25, options.nn.k 3 -> 5, steps 500 -> 300"
    assert settings_differences({"lr": 1, "c": []}, {"lr": 1.0, "c": [], "options": {}}) == []  # JSON's 1 == 1.0
    assert settings_differences({"a": 1}, {"a": 1, "b": 2}, only_shared=True) == []
    assert settings_differences({"device": "cpu"}, {"device": "cuda"}, ignore=()) == [("device", "cpu", "cuda")]


def test_description_is_one_bounded_line():
    diffs = [(f"s{i}", i, i + 1) for i in range(9)]
    assert describe_differences(diffs, most=2) == "s0 0 -> 1, s1 1 -> 2, and 7 more"
    long = describe_differences([("stats", "x" * 100, "y")])
    assert len(long) < 70 and "..." in long
    with pytest.raises(OviError, match=r"^RUN was made with other settings \(steps 1 -> 2\); do X$"):
        refuse_if_different({"steps": 1}, {"steps": 2}, "RUN", "do X")


def _prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def test_gen_prompts_refuses_finished_prompts_made_with_other_settings(run_cli, tiny_gen_args, tmp_path):
    folder = tmp_path / "out"
    args = ("gen", "--prompts", _prompts(tmp_path), *tiny_gen_args, "--decoder", "embeds", "--steps", "3",
            "--out", folder)
    res = run_cli(*args)
    assert res.code == 0, res.stderr
    first = folder / "0000-a-red-cube-on-a-table.json"
    assert json.loads(first.read_text())["settings"]["steps"] == 3
    stamp = first.stat().st_mtime_ns

    res = run_cli(*args, "--steps", "4", "--nn-k", "2")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.code == 2 and len(lines) == 1, res.stderr
    assert "3 finished prompt(s)" in lines[0] and "steps 3 -> 4" in lines[0] and "--overwrite" in lines[0]
    assert "options.nn.k <unset> -> 2" in lines[0]
    assert first.stat().st_mtime_ns == stamp  # nothing written

    res = run_cli(*args)  # the same settings: all finished, nothing to redo
    assert res.code == 0 and first.stat().st_mtime_ns == stamp

    res = run_cli(*args, "--steps", "4", "--overwrite")
    assert res.code == 0, res.stderr
    assert json.loads(first.read_text())["settings"]["steps"] == 4


def test_gen_prompts_compares_what_an_older_sidecar_recorded(run_cli, tiny_gen_args, tmp_path):
    folder = tmp_path / "out"
    args = ("gen", "--prompts", _prompts(tmp_path), *tiny_gen_args, "--decoder", "embeds", "--steps", "3",
            "--out", folder)
    assert run_cli(*args).code == 0
    for side in folder.glob("*.json"):  # as written before sidecars held "settings"
        data = json.loads(side.read_text())
        del data["settings"]
        side.write_text(json.dumps(data))
    assert run_cli(*args).code == 0  # same settings: resumes
    res = run_cli(*args, "--tokens", "2")
    assert res.code == 2 and "tokens 6 -> 2" in res.stderr
