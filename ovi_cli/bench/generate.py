"""`ovi bench generate` as a library: a benchmark's prompts -> OviPipeline -> the official layout.

    from ovi_cli.bench.generate import BenchOptions, plan_bench_run
    run = plan_bench_run("toy", Path("RUN"), settings, BenchOptions(images_per_prompt=4))  # every check
    result = run.execute(reporter)   # models, this process's share (resume), bench.json, records

`execute` is what `ovi bench generate` runs, step by step:

    run.open(pipe)            # bench.json: created, or checked against this run's settings
    run.generate(pipe)        # this process's share of the images (resume: finished ones are skipped)
    run.finish()              # records.jsonl merged, progress in bench.json

The images come from `OviPipeline.embed` and `OviPipeline.decode`, batched by `plan.Group`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ovi_cli.bench import layout, runlog
from ovi_cli.bench.plan import Group, Unit, check_plan_options, owned, plan_category
from ovi_cli.bench.suites import CategoryPrompts
from ovi_cli.distributed import Launch, Share
from ovi_cli.errors import OviError
from ovi_cli.outputs import atomic_outputs
from ovi_cli.reporter import Reporter
from ovi_cli.settings import GenSettings

# a run's plan is held in memory (one small object per image): at most this many images per run
MAX_PLANNED_IMAGES = 2_000_000

# sidecar keys that describe the whole run (they live in bench.json), not one image
RUN_LEVEL_KEYS = frozenset({
    "prior", "decoder", "constraints", "tokens", "steps", "lr", "weight_decay", "negative", "options",
    "decoding", "models", "device", "dtype", "versions", "history", "timings", "files", "settings",
})


@dataclass(frozen=True)
class BenchOptions:
    """What `ovi bench generate` adds to `ovi gen`'s settings."""

    images_per_prompt: int = 10
    seed: int = 42
    batch: int = 1
    ovi_per: str = "image"  # "image": each image its own OVI; "prompt": one OVI feeds all K decoder seeds


def run_settings(settings: GenSettings, options: BenchOptions) -> dict[str, Any]:
    """The settings a run is made with: all of `ovi gen`'s plus the benchmark's (bench.json "settings")."""
    return {**settings.to_dict(), **asdict(options)}


def header(benchmark: str, settings: GenSettings, options: BenchOptions, suites: list[CategoryPrompts]) -> dict:
    """The part of bench.json known before any model loads (checked against an existing run)."""
    return {"format": runlog.FORMAT, "format_version": runlog.FORMAT_VERSION, "benchmark": benchmark,
            "settings": run_settings(settings, options),
            "categories": {s.name: s.record() for s in suites}}


def model_record(pipe: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(models, identity) of a loaded pipeline: what bench.json records, and what a resume must match."""
    from ovi_cli.pipeline import package_versions

    store = getattr(pipe.store, "describe", lambda: None)()
    models = {"encoder": pipe.encoders.describe(), "decoder": pipe.decoder.describe(), "stats": store,
              "prior_options": pipe.prior_options, "versions": package_versions()}
    identity = {"encoder_fingerprint": pipe.encoders.fingerprint(), "stats": store["path"] if store else None,
                # the content, not only the names: a model folder or a store replaced in place is noticed
                "decoder_fingerprint": model_fingerprint(pipe.settings.decoder_model),
                "stats_fingerprint": runlog.content_fingerprint(Path(store["path"])) if store else None}
    return models, identity


def model_fingerprint(source: str) -> str:
    """A model's content id: of its local folder (`runlog.content_fingerprint`), or of the hub cache's
    snapshot it resolves to; the source itself when neither is found (a hub id not yet downloaded)."""
    from ovi_cli.hub import ModelUnavailable, resolve_model_dir

    path = Path(source).expanduser()
    if not path.is_dir():
        try:
            path = Path(resolve_model_dir(source, what="decoder", flag="--decoder-model"))
        except (ModelUnavailable, OviError, OSError, TypeError):
            return str(source)
    return runlog.content_fingerprint(path)


@dataclass
class Todo:
    """This process's share of a category and what of it is left."""

    suite: CategoryPrompts
    groups: list[Group]  # owned by this process
    done: set[int]  # finished image indices among them

    @property
    def total(self) -> int:
        return sum(len(g.units) for g in self.groups)

    def missing(self, group: Group) -> list[int]:
        """Positions in `group.units` still to write."""
        return [k for k, u in enumerate(group.units) if u.index not in self.done]


@dataclass
class Written:
    """One image as it lands: the progress callback gets these."""

    unit: Unit
    path: Path
    record: dict[str, Any]


ProgressFn = Callable[[Written], None]


@dataclass
class BenchRun:
    run: Path
    benchmark: str
    suites: list[CategoryPrompts]
    settings: GenSettings
    options: BenchOptions = field(default_factory=BenchOptions)
    share: Share = field(default_factory=Share)

    # ---- before loading models -----------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return header(self.benchmark, self.settings, self.options, self.suites)

    def check_existing(self) -> None:
        """Refuse, before loading anything, a RUN made with other settings or prompt lists."""
        existing = runlog.read_bench_json(self.run)
        if existing is not None:
            runlog.check_header(existing, self.header(), self.run)

    def extend(self) -> bool:
        """Rank 0, before loading: add this run's new categories to an existing bench.json (True if one exists)."""
        return runlog.extend_run(self.run, self.header()) is not None

    def groups(self, suite: CategoryPrompts) -> list[Group]:
        o = self.options
        return plan_category(suite.name, suite.selected, o.images_per_prompt, o.seed, o.batch, o.ovi_per)

    def todo(self) -> list[Todo]:
        """This process's groups per category, with the images already finished (resume)."""
        out = []
        for suite in self.suites:
            groups = owned(self.groups(suite), self.share)
            prompts = {u.index: u.prompt for g in groups for u in g.units}
            records = runlog.read_records(self.run, suite.name)
            out.append(Todo(suite, groups, runlog.finished(self.run, suite.name, records, prompts, prompts)))
        return out

    # ---- with models loaded --------------------------------------------------------------------
    def open(self, pipe: Any) -> dict[str, Any]:
        """Rank 0, models loaded: create bench.json, or check the models against the existing one."""
        models, identity = model_record(pipe)
        return runlog.create_or_join(self.run, {**self.header(), "identity": identity, "models": models})

    def check_models(self, pipe: Any) -> None:
        """The models' check `open` makes, for a run whose bench.json exists."""
        existing = runlog.read_bench_json(self.run)
        if existing is not None:
            runlog.check_identity(existing, model_record(pipe)[1], self.run)

    def generate(self, pipe: Any, todo: list[Todo], on_image: ProgressFn | None = None,
                 on_group: Callable[[Group], None] | None = None) -> int:
        """Compute every unfinished group of `todo`; returns the number of images written."""
        written = 0
        for item in todo:
            log: runlog.RecordLog | None = None  # opened with the first image this process makes here
            try:
                for group in item.groups:
                    missing = item.missing(group)
                    if not missing:
                        continue
                    if on_group is not None:
                        on_group(group)
                    log = log or runlog.RecordLog(self.run, item.suite.name, self.share.label)
                    for w in compute_group(pipe, self.run, group, set(missing)):
                        log.append(w.record)  # after the image landed: a record means a whole image
                        item.done.add(w.unit.index)
                        written += 1
                        if on_image is not None:
                            on_image(w)
            finally:
                if log is not None:
                    log.close()
        return written

    # ---- the whole run (every share) ------------------------------------------------------------
    def status(self) -> dict[str, dict[str, int]]:
        """Per category: images finished, images planned (with this --limit), prompts, records."""
        out = {}
        for suite in self.suites:
            prompts = {u.index: u.prompt for g in self.groups(suite) for u in g.units}
            records = runlog.read_records(self.run, suite.name)
            done = runlog.finished(self.run, suite.name, records, prompts, prompts)
            out[suite.name] = {"images": len(done), "planned": len(prompts), "prompts": len(suite.selected),
                               "records": len(records)}
        return out

    def finish(self) -> dict[str, dict[str, int]]:
        """After every process is done (rank 0): records.jsonl merged, progress recorded in bench.json."""
        for suite in self.suites:
            runlog.merge_records(self.run, suite.name)
        progress = self.status()
        runlog.update_progress(self.run, progress)
        return progress


    # ---- the whole of one process's run (what `ovi bench generate` does) ------------------------------
    def execute(self, reporter: Reporter | None = None, launch: Launch | None = None) -> BenchResult:
        """Load the models (only when something is left), make this process's share of the images,
        then (rank 0, once every process is done) merge the records and write the progress.

        Reports through `reporter`: `info` (what is planned), `start`/`advance` (the images),
        `new_batch` (each group), and the pipeline's OVI and decoder progress.
        """
        from ovi_cli.distributed import barrier, cuda_device_count, device_for, process_group
        from ovi_cli.hub import check_models
        from ovi_cli.pipeline import OviPipeline

        reporter = reporter or Reporter()
        launch = launch or Launch()
        device = device_for(self.settings.device, launch, cuda_device_count())
        pipe = OviPipeline(replace(self.settings, device=device), reporter=reporter)
        if not pipe.produces_images:
            raise OviError(f"decoder {self.settings.decoder!r} makes no images; a benchmark needs images (e.g. "
                           "kandinsky22, or --model toy)")
        todo = self.todo()
        total = sum(t.total for t in todo)
        done = sum(len(t.done) for t in todo)
        exists = self.extend() if launch.leader else True
        needs_models = done < total or not exists
        if needs_models:
            check_models(pipe.required_models())  # every missing model named at once, before anything is written
        try:
            self.run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OviError(f"cannot create --out {str(self.run)!r}: {exc.strerror or exc}") from exc
        if launch.leader:
            status = self.status()
            planned, finished = (sum(p[k] for p in status.values()) for k in ("planned", "images"))
            where = f"; {launch.world_size} processes" if launch.distributed else ""
            if self.share.count > launch.world_size:  # --shard I/N
                where += f"; this job is share {self.share.index // launch.world_size + 1} of " \
                         f"{self.share.count // launch.world_size}"
            reporter.info(f"{planned} images in {len(status)} categories, {finished} already done{where}")
        with process_group(launch, device):
            if needs_models:
                pipe.load()
            if launch.leader and not exists:
                self.open(pipe)  # creates bench.json (or, if another job just did, checks against it)
            barrier(launch)
            if needs_models and exists:
                self.check_models(pipe)
            reporter.start("images", total)
            if done:
                reporter.advance(done)
            label = [""]

            def on_group(group: Group) -> None:
                reporter.new_batch(f"{group.category} #{group.number}")
                first = group.units[0]
                label[0] = f"{group.category} [{first.prompt_index + 1}] {first.prompt[:50]}"
                reporter.advance(0, info=label[0])

            written = self.generate(pipe, todo, on_image=lambda w: reporter.advance(1, info=label[0]),
                                    on_group=on_group)
            barrier(launch)
            summary = self.finish() if launch.leader else None
        return BenchResult(self.run, written, summary)


@dataclass
class BenchResult:
    """What one process's `BenchRun.execute` did: images written; rank 0: the whole run's progress
    per category (images, planned, prompts, records), else None."""

    run: Path
    written: int
    summary: dict[str, dict[str, int]] | None

    @property
    def left(self) -> int | None:
        return None if self.summary is None else sum(p["planned"] - p["images"] for p in self.summary.values())


def check_plan_size(suites: list[CategoryPrompts], options: BenchOptions) -> None:
    """A plan this process can hold: `-k` and the images of the whole run bounded, the seeds of every
    image valid (`seed + j` for j < K), before anything is written."""
    from ovi_cli.checks import check_int, check_seed

    check_plan_options(options.images_per_prompt, options.batch, options.ovi_per)
    check_int(options.images_per_prompt, "--images-per-prompt", minimum=1)
    check_seed(options.seed, count=options.images_per_prompt)
    images = sum(len(s.selected) for s in suites) * options.images_per_prompt
    if images > MAX_PLANNED_IMAGES:
        raise OviError(f"this run would make {images:,} images ({sum(len(s.selected) for s in suites):,} prompts x "
                       f"-k {options.images_per_prompt}); at most {MAX_PLANNED_IMAGES:,} per run: lower -k or "
                       "--limit, or split the categories over several --out folders")


def plan_bench_run(benchmark: str, out: Path, settings: GenSettings, options: BenchOptions | None = None, *,
                   categories: str | None = None, limit: int | None = None,
                   prompt_files: list[str] | None = None, shard: tuple[int, int] | None = None,
                   launch: Launch | None = None) -> BenchRun:
    """A `BenchRun` with every input checked before any model loads (as `ovi bench generate`): the
    benchmark, categories, prompt files and prompts, the plan's size and seeds, the settings, the output
    folder, and an existing run's settings and prompt lists (resume)."""
    from ovi_cli.bench.suites import get_benchmark, load_suite, parse_categories, parse_prompt_files
    from ovi_cli.checks import check_output_folder, refuse_stdin_when_distributed
    from ovi_cli.distributed import work_share

    options = options or BenchOptions()
    launch = launch or Launch()
    refuse_stdin_when_distributed([f.partition("=")[2] for f in prompt_files or []], launch.distributed,
                                  "--prompt-file CATEGORY=")
    share = work_share(shard, launch)
    check_plan_options(options.images_per_prompt, options.batch, options.ovi_per)
    bench = get_benchmark(benchmark)
    names = parse_categories(categories, bench.categories, benchmark)
    suites = load_suite(bench, names, parse_prompt_files(prompt_files, bench.categories, benchmark), limit)
    check_plan_size(suites, options)
    check_output_folder(out)  # a folder there or creatable, writable, not a file, not /proc
    settings.check()
    run = BenchRun(Path(out), benchmark, suites, settings, options, share)
    run.check_existing()
    return run


def image_record(sidecar: dict[str, Any], unit: Unit, seconds: dict[str, float]) -> dict[str, Any]:
    """One image's JSON line: where it is, its seeds, the prior's per-prompt outputs, and `seconds`:
    this image's share of its group's prior time and of its decoder batch's time (they sum to the run's)."""
    per_prompt = {k: v for k, v in sidecar.items() if k not in RUN_LEVEL_KEYS and k not in ("prompt", "seed")}
    return {"index": unit.index, "prompt": unit.prompt, "prompt_index": unit.prompt_index,
            "image_index": unit.image_index, "file": f"{layout.SAMPLES}/{layout.sample_name(unit.prompt, unit.index)}",
            "seed": unit.seed, "ovi_seed": unit.ovi_seed, **per_prompt, "seconds": seconds}


def compute_group(pipe: Any, run: Path, group: Group, missing: set[int]) -> Iterator[Written]:
    """One group: its OVI batch, then each decoder batch that holds a missing image; yields each
    missing image once its file has landed (atomically)."""
    from ovi_cli.pipeline import EmbedBatch
    from ovi_cli.png_recipe import write_png

    batch = pipe.embed([p for p, _ in group.ovi_rows], [s for _, s in group.ovi_rows])
    prior_each = batch.timings.get("prior_s", 0.0) / len(group.units)  # each image's share of the OVI batch
    sidecars = [pipe.sidecar(batch, r) for r in range(len(group.ovi_rows))]
    for chunk in group.decode_chunks:
        if not missing.intersection(chunk):
            continue
        rows = [group.unit_rows[k] for k in chunk]
        units = [group.units[k] for k in chunk]
        part = EmbedBatch([u.prompt for u in units], [u.seed for u in units], batch.text,
                          batch.image_embeds[rows], batch.negative_image_embeds[rows], [])
        t = time.perf_counter()
        images = pipe.decode(part)
        decode_each = (time.perf_counter() - t) / len(chunk)
        for k, unit, row, image in zip(chunk, units, rows, images):
            if k not in missing:
                continue
            path = layout.sample_path(run, group.category, unit.prompt, unit.index)
            with atomic_outputs() as staging:
                # the recipe inside the PNG, as `ovi gen` writes it; the decoder's seed is the image's own
                staging.write_with(path, lambda p, im=image, sc=sidecars[row], u=unit: write_png(
                    p, im, sc, decoder_seed=u.seed))
            seconds = {"prior": prior_each, "decode": decode_each}
            yield Written(unit, path, image_record(sidecars[row], unit, seconds))
