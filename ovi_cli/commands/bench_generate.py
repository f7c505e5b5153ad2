"""`ovi bench generate NAME --out RUN`: a benchmark's images in the official layout, on one process or many.

Thin over `ovi_cli.bench.generate` (`plan_bench_run`, `BenchRun.execute`): parse the flags, build the
run (every input checked before any model loads), render its reports and rank 0's summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.commands.common import run_command

BENCH = "Benchmark"
GenerateCommand = run_command()
LOG_EVERY_S = 60.0  # a plain progress line this often when stderr is not a terminal (cluster logs)


class _LogLines:
    """Plain progress lines for logs (stderr not a terminal): images done, rate, time left."""

    def __init__(self, total: int, enabled: bool, every: float = LOG_EVERY_S) -> None:
        self.total, self.enabled, self.every = total, enabled, every
        self.start = self.last = time.monotonic()
        self.done = 0

    def image(self, category: str) -> None:
        self.done += 1
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every or self.done == self.total):
            from ovi_cli.console import err_console

            self.last = now
            rate = (now - self.start) / self.done
            left = int(rate * (self.total - self.done))
            err_console.print(f"ovi bench: {self.done}/{self.total} images ({category}), {rate:.2f} s/image, "
                              f"{left // 3600}h{left % 3600 // 60:02d}m left", markup=False, highlight=False)


def generate(
    ctx: typer.Context,
    benchmark: Annotated[str, typer.Argument(
        help="Benchmark plugin: t2i-compbench (T2I-CompBench++ validation prompts), toy (offline, --model toy).",
        show_default=False)],
    out: Annotated[Path, typer.Option(
        "--out", "-o", rich_help_panel=options.OUTPUT, show_default=False,
        help="Run folder: RUN/<category>/samples/{prompt}_{NNNNNN}.png, RUN/bench.json, "
        "RUN/<category>/records.jsonl. Rerunning the same command resumes.")],
    categories: Annotated[str | None, typer.Option(
        rich_help_panel=BENCH, show_default=False,
        help="Comma-separated categories (default: all), e.g. color,shape,texture.")] = None,
    limit: Annotated[int | None, typer.Option(
        rich_help_panel=BENCH, show_default=False, help="Only the first N prompts of each category.")] = None,
    images_per_prompt: Annotated[int, typer.Option(
        "--images-per-prompt", "-k", rich_help_panel=BENCH,
        help="Images per prompt, K: image j of prompt i is file i*K+j.")] = 10,
    seed: Annotated[int, typer.Option(
        rich_help_panel=BENCH, help="Image j of every prompt uses seed + j (OVI start and decoder noise).")] = 42,
    ovi_per: Annotated[str, typer.Option(
        rich_help_panel=BENCH,
        help="image: each image runs its own OVI from its seed (the paper's setting); prompt: one OVI per "
        "prompt (seed) feeds all K decoder seeds, K times cheaper.")] = "image",
    prompt_file: Annotated[list[str] | None, typer.Option(
        "--prompt-file", rich_help_panel=BENCH, metavar="CATEGORY=FILE",
        help="Your own prompts for a category (one per line), repeatable: --prompt-file color=my_colors.txt.")]
        = None,
    shard: Annotated[str | None, typer.Option(
        rich_help_panel=options.RUN, show_default=False,
        help="Run only share I of N (I/N), for separate jobs (SLURM arrays, machines) writing the same RUN; "
        "under torchrun the ranks split each share again.")] = None,
    batch: Annotated[int, typer.Option(
        rich_help_panel=options.RUN,
        help="Images (--ovi-per image) or prompts (--ovi-per prompt) optimised together; part of the run's "
        "settings, since batch shapes change float rounding.")] = 1,
    json_out: options.Json = False,
) -> None:
    """Generate a benchmark's images in the official T2I-CompBench layout (resumable, many GPUs).

    Offline in seconds: ovi bench generate toy --model toy --out runs/toy -k 2.
    Many GPUs: torchrun --nproc-per-node 8 -m ovi_cli bench generate t2i-compbench --out RUN ...
    """
    from ovi_cli.bench.generate import BenchOptions, plan_bench_run
    from ovi_cli.commands.common import flag_values, settings_from_params
    from ovi_cli.console import err_console, make_progress
    from ovi_cli.distributed import launch_from_env, parse_shard

    # ---- every input, before any model loads ----
    launch = launch_from_env()
    quiet = bool(flag_values(ctx).get("quiet"))
    settings = settings_from_params(ctx)
    run = plan_bench_run(benchmark, out, settings, BenchOptions(images_per_prompt, seed, batch, ovi_per),
                         categories=categories, limit=limit, prompt_files=prompt_file, shard=parse_shard(shard),
                         launch=launch)
    show = not quiet and launch.leader  # one process draws progress; the others only warn
    progress = make_progress(not show or not err_console.is_terminal)
    reporter = _reporter(progress, quiet=not show, logs=show and not err_console.is_terminal)
    with progress:
        result = run.execute(reporter, launch)
    if result.summary is not None:
        _print_summary(run, result.summary, result.written, quiet, json_out)


def _reporter(progress, quiet: bool, logs: bool):
    """The Rich reporter, plus (`logs`: stderr is not a terminal) a plain progress line now and then."""
    from ovi_cli.console import RichReporter, err_console

    class BenchReporter(RichReporter):
        def info(self, message: str) -> None:
            if not self.quiet:
                err_console.print(message, markup=False, highlight=False)

        def start(self, label: str, total: int | None) -> None:
            super().start(label, total)
            self.total, self.skipped, self.log = total or 0, 0, None

        def advance(self, done: int = 1, info: str = "") -> None:
            super().advance(done, info)
            if not info:  # before the first group: the images already done
                self.skipped += done
            elif done:
                if self.log is None:
                    self.log = _LogLines(self.total - self.skipped, logs)
                self.log.image(info.split(" [", 1)[0])

    return BenchReporter(progress, quiet=quiet)


def _print_summary(run, summary: dict, written: int, quiet: bool, json_out: bool) -> None:
    """Per category on stderr; on stdout the run's folder, or with --json one JSON object."""
    import json

    from ovi_cli.console import err_console

    if not quiet:
        for cat, p in summary.items():
            err_console.print(f"{cat}: {p['images']}/{p['planned']} images", markup=False, highlight=False)
        left = sum(p["planned"] - p["images"] for p in summary.values())
        tail = "complete" if not left else f"{left} images still to make (other shares, or rerun the same command)"
        mine = "" if run.share.everything else "this process "
        err_console.print(f"{mine}wrote {written} images; run {tail} -> {run.run}", markup=False, highlight=False)
    if json_out:
        left = sum(p["planned"] - p["images"] for p in summary.values())
        typer.echo(json.dumps({"run": str(run.run), "written": written, "complete": not left,
                               "categories": {c: {"images": p["images"], "planned": p["planned"]}
                                              for c, p in summary.items()}}))
    else:
        typer.echo(str(run.run))
