"""`ovi bench generate|score|table`: a benchmark's images, their scores, and the paper's table."""

from __future__ import annotations

import typer


def bench_app() -> typer.Typer:
    from ovi_cli.commands import bench_fidelity, bench_generate, bench_score

    app = typer.Typer(help="Benchmarks (T2I-CompBench++, toy): generate images, score them, tabulate runs.",
                      no_args_is_help=True)
    app.command("generate", cls=bench_generate.GenerateCommand)(bench_generate.generate)
    app.command("score", cls=bench_score.ScoreCommand)(bench_score.score)
    app.command("table")(bench_score.table)
    app.command("fidelity")(bench_fidelity.fidelity)
    return app
