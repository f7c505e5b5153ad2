"""Issue 22 input edges: a deeply nested JSON file is one line and exit 2, not "unexpected error"; standard input
under torchrun is refused."""

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


def test_standard_input_prompts_are_refused_under_torchrun(tmp_path):
    """Issue 22: under torchrun every process has its own standard input, so `--prompts -` and
    `--prompt-file CAT=-` are one line before anything loads (a plain run reads stdin as usual)."""
    import pytest

    from ovi_cli.bench.generate import BenchOptions, plan_bench_run
    from ovi_cli.distributed import Launch
    from ovi_cli.errors import OviError
    from ovi_cli.gen_run import GenRun
    from ovi_cli.settings import GenSettings

    torchrun = Launch(rank=0, world_size=2, local_rank=0, launched=True)
    with pytest.raises(OviError, match="--prompts -: under torchrun each process reads its own standard input"):
        GenRun(GenSettings(), prompts_file=Path("-"), out=tmp_path / "g", launch=torchrun).plan()
    with pytest.raises(OviError, match="under torchrun each process reads its own standard input"):
        plan_bench_run("toy", tmp_path / "b", GenSettings(), BenchOptions(), prompt_files=["single=-"],
                       launch=torchrun)


def test_run_files_that_are_fifos_never_block(run_cli, tmp_path):
    """Issue 22: a FIFO (or device) where a run file should be is one line, never a hang."""
    import os

    run = tmp_path / "run"
    (run / "color" / "samples").mkdir(parents=True)
    os.mkfifo(run / "bench.json")
    for args in (("bench", "score", run, "-q"),
                 ("bench", "generate", "toy", "--model", "toy", "--out", run, "-k", "1", "--limit", "1", "-q")):
        res = run_cli(*args)
        assert res.code == 2 and "is not a regular file" in res.stderr, res.stderr

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    out = tmp_path / "gen"
    out.mkdir()
    os.mkfifo(out / "0000-a-red-circle.json")  # where the sidecar of line 0 goes: read on resume
    res = run_cli("gen", "--prompts", prompts, "--model", "toy", "--steps", "2", "-o", out, "-q")
    assert res.code == 0, res.stderr
    assert (out / "0000-a-red-circle.json").is_file()
