"""docs/toy.md promises file names: the toy commands it names are run here (reduced) and every file
name the page gives for them is checked to exist (issue 22: the page named files an older
`ovi eval toy` wrote)."""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "toy.md"
FILE = r"`([\w./<>{},-]+\.(?:md|csv|json|jsonl|png))`"


def _row(command: str) -> str:
    """The Commands table's row of `command`."""
    rows = [ln for ln in PAGE.read_text(encoding="utf-8").splitlines() if ln.startswith(f"| `{command}")]
    assert len(rows) == 1, command
    return rows[0]


def _expand(name: str) -> list[str]:
    """`table.{md,csv}` -> table.md, table.csv."""
    m = re.search(r"\{([^}]*)\}", name)
    if not m:
        return [name]
    return [x for part in m.group(1).split(",") for x in _expand(name[:m.start()] + part + name[m.end():])]


def test_eval_toy_writes_the_files_the_page_names(run_cli, tmp_path):
    from ovi_plugins.toy.eval import default_methods, run_folder

    row = _row("ovi eval toy")
    names = [n for found in re.findall(FILE, row) for n in _expand(found)]
    assert {"table.md", "table.csv", "table.json", "table.png"} <= set(names), names
    out = tmp_path / "eval"
    res = run_cli("eval", "toy", "--prompts", "1", "--steps", "2", "--out", out, "--quiet")
    assert res.code == 0, res.stderr
    for name in names:
        assert (out / name).is_file(), name
    # "one `ovi bench generate` run folder under --out (named by the method, e.g. `ovi-plus-nn/`)"
    folders = re.findall(r"`([\w-]+)/`", row)
    assert folders and all((out / f).is_dir() for f in folders)
    assert all((run_folder(out, m.label) / "bench.json").is_file() for m in default_methods())
    # the default prompt count the page states is the toy benchmark's
    from ovi_cli.bench.suites import get_benchmark

    bench = get_benchmark("toy")
    counts = {c: len(bench.prompts(c)) for c in bench.categories}
    assert f"default all {sum(counts.values())}" in row
    assert all(f"{n} `{c}`" in row for c, n in counts.items()), counts
    text = PAGE.read_text(encoding="utf-8")
    assert all(f"{n} in category `{c}`" in text or f"{n} in `{c}`" in text for c, n in counts.items()), counts


def test_toy_dataset_writes_the_files_the_page_names(run_cli, tmp_path):
    row = _row("ovi toy dataset")
    out = tmp_path / "ds"
    res = run_cli("toy", "dataset", out, "--n", "10", "--heldout", "2")
    assert res.code == 0, res.stderr
    for name in re.findall(r"`DIR/([\w./-]+)`", row):
        pattern = re.sub(r"N+", lambda m: "[0-9]" * len(m.group(0)), name)
        assert list(out.glob(pattern)), name


def test_gen_toy_writes_the_files_the_page_names(run_cli, tmp_path):
    text = PAGE.read_text(encoding="utf-8")
    assert "-> outputs/<time>-a-red-circle.png (64x64) + .json" in text
    out = tmp_path / "red.png"
    assert run_cli("gen", "a red circle", "--model", "toy", "--steps", "3", "-o", out, "--quiet").code == 0
    assert out.is_file() and out.with_suffix(".json").is_file()


def test_bench_run_layout_the_benchmark_page_names(run_cli, tmp_path):
    """docs/benchmark.md, "What a run holds", on a one-prompt toy run."""
    text = (PAGE.parent / "benchmark.md").read_text(encoding="utf-8")
    block = text[text.index("### What a run holds"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    run = tmp_path / "run"
    res = run_cli("bench", "generate", "toy", "--model", "toy", "--out", run, "-k", "2", "--limit", "1",
                  "--steps", "2", "--categories", "single", "--quiet")
    assert res.code == 0, res.stderr
    for line in block.strip().splitlines():
        name = line.split()[0].replace("RUN/", "")
        pattern = (name.replace("<category>", "single").replace("{prompt}", "*").replace("{NNNNNN}", "[0-9]" * 6)
                   .replace("part-I-of-N", "part-*-of-*"))
        assert list(run.glob(pattern)), name
