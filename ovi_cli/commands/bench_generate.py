"""`ovi bench generate NAME --out RUN`: a benchmark's images in the official layout, on one process or many.

Thin over `ovi_cli.bench.generate`: parse and check every input, load the models, run this
process's share, and let rank 0 write what the processes share.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.errors import OviError
from ovi_cli.settings import GenSettings

BENCH = "Benchmark"
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
    model: options.Model = None,
    prior: options.Prior = GenSettings.prior,
    decoder: options.Decoder = GenSettings.decoder,
    encoder_model: options.EncoderModel = GenSettings.encoder_model,
    decoder_model: options.DecoderModel = GenSettings.decoder_model,
    tokens: options.Tokens = GenSettings.tokens,
    steps: options.Steps = GenSettings.steps,
    schedule: options.Schedule = GenSettings.schedule,
    lr: options.Lr = GenSettings.lr,
    weight_decay: options.WeightDecay = GenSettings.weight_decay,
    patience: options.Patience = GenSettings.patience,
    min_delta: options.MinDelta = GenSettings.min_delta,
    constraint: options.Constraint = None,
    stats: options.Stats = None,
    option: options.Option = None,
    nn_every: options.NnEvery = None,
    nn_k: options.NnK = None,
    prior_model: options.PriorModel = None,
    prior_steps: options.PriorSteps = None,
    prior_guidance: options.PriorGuidance = None,
    negative: options.Negative = GenSettings.negative,
    height: options.Height = GenSettings.height,
    width: options.Width = GenSettings.width,
    decoder_steps: options.DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: options.GuidanceScale = GenSettings.guidance_scale,
    device: options.Device = GenSettings.device,
    dtype: options.Dtype = GenSettings.dtype,
    compile: options.Compile = False,
    quiet: options.Quiet = False,
    json_out: options.Json = False,
) -> None:
    """Generate a benchmark's images in the official T2I-CompBench layout (resumable, many GPUs).

    Offline in seconds: ovi bench generate toy --model toy --out runs/toy -k 2.
    Many GPUs: torchrun --nproc-per-node 8 -m ovi_cli bench generate t2i-compbench --out RUN ...
    """
    from ovi_cli.bench.generate import BenchOptions, BenchRun
    from ovi_cli.bench.plan import check_plan_options
    from ovi_cli.bench.suites import get_benchmark, load_suite, parse_categories, parse_prompt_files

    # ---- every input, before any model loads ----
    from ovi_cli.checks import check_output_folder
    from ovi_cli.commands.common import settings_from_params
    from ovi_cli.distributed import launch_from_env, parse_shard, work_share

    launch = launch_from_env()
    share = work_share(parse_shard(shard), launch)
    check_plan_options(images_per_prompt, batch, ovi_per)
    bench_options = BenchOptions(images_per_prompt, seed, batch, ovi_per)
    settings = settings_from_params(ctx)
    bench = get_benchmark(benchmark)
    names = parse_categories(categories, bench.categories, benchmark)
    suites = load_suite(bench, names, parse_prompt_files(prompt_file, bench.categories, benchmark), limit)
    check_output_folder(out)  # a folder there or creatable, writable, not a file, not /proc
    settings.check()
    run = BenchRun(out, benchmark, suites, settings, bench_options, share)
    run.check_existing()
    _run(run, settings, launch, quiet, json_out)


def _run(run, settings: GenSettings, launch, quiet: bool, json_out: bool) -> None:
    from dataclasses import replace

    from ovi_cli.console import RichReporter, err_console, make_progress
    from ovi_cli.distributed import barrier, cuda_device_count, device_for, process_group
    from ovi_cli.hub import check_models
    from ovi_cli.pipeline import OviPipeline

    device = device_for(settings.device, launch, cuda_device_count())
    show = not quiet and launch.leader  # one process draws progress; the others only warn
    progress = make_progress(not show or not err_console.is_terminal)
    reporter = RichReporter(progress, quiet=not show)
    pipe = OviPipeline(replace(settings, device=device), reporter=reporter)
    if not pipe.produces_images:
        raise OviError(f"decoder {settings.decoder!r} makes no images; a benchmark needs images (e.g. kandinsky22, "
                       "or --model toy)")
    todo = run.todo()
    total = sum(t.total for t in todo)
    done = sum(len(t.done) for t in todo)
    exists = run.extend() if launch.leader else True
    needs_models = done < total or not exists
    if needs_models:
        check_models(pipe.required_models())  # every missing model named at once, before anything is written
    try:
        run.run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OviError(f"cannot create --out {str(run.run)!r}: {exc.strerror or exc}") from exc
    if show:
        status = run.status()
        planned, finished = (sum(p[k] for p in status.values()) for k in ("planned", "images"))
        where = f"; {launch.world_size} processes" if launch.distributed else ""
        if run.share.count > launch.world_size:  # --shard I/N
            where += f"; this job is share {run.share.index // launch.world_size + 1} of " \
                     f"{run.share.count // launch.world_size}"
        err_console.print(f"{planned} images in {len(status)} categories, {finished} already done{where}",
                          markup=False, highlight=False)
    with process_group(launch, device):
        if needs_models:
            pipe.load()
        if launch.leader and not exists:
            run.open(pipe)  # creates bench.json (or, if another job just did, checks against it)
        barrier(launch)
        if needs_models and exists:
            run.check_models(pipe)
        task = progress.add_task("images", total=total, completed=done, info="")
        log = _LogLines(total - done, show and not err_console.is_terminal)

        def on_group(group) -> None:
            reporter.new_batch(f"{group.category} #{group.number}")
            first = group.units[0]
            progress.update(task, info=f"{group.category} [{first.prompt_index + 1}] {first.prompt[:50]}")

        def on_image(w) -> None:
            progress.advance(task)
            log.image(w.unit.category)

        with progress:
            written = run.generate(pipe, todo, on_image=on_image, on_group=on_group)
        barrier(launch)
        if launch.leader:
            summary = run.finish()
            _print_summary(run, summary, written, quiet, json_out)


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
