"""Issue 22: a deeply nested JSON file (meta.json, bench.json) is one line and exit 2, not "unexpected error"."""

from __future__ import annotations

import shutil
from pathlib import Path

DEEP = "[" * 100_000 + "]" * 100_000
TOY_STORE = Path(__file__).resolve().parents[1] / "plugins" / "toy" / "models" / "stats"


def test_a_store_whose_meta_json_is_nested_too_deeply(run_cli, tmp_path):
    store = tmp_path / "deep"
    shutil.copytree(TOY_STORE, store)
    (store / "meta.json").write_text(DEEP)
    res = run_cli("stats", "info", store)
    assert res.code == 2 and "unexpected" not in res.stderr
    assert "meta.json" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_bench_json_nested_too_deeply(run_cli, tmp_path):
    run = tmp_path / "run"
    (run / "color" / "samples").mkdir(parents=True)
    (run / "bench.json").write_text(DEEP)
    res = run_cli("bench", "score", run, "-q")
    assert res.code == 2 and "unexpected" not in res.stderr
    assert "nested too deeply" in res.stderr and len(res.stderr.strip().splitlines()) == 1
