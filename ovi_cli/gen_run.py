"""`ovi gen` as a library: one prompt or a prompt file -> prior -> image embedding -> decoder -> PNG + JSON.

    from ovi_cli.gen_run import GenRun
    from ovi_cli.settings import GenSettings
    run = GenRun(GenSettings(steps=300, batch=4), prompts_file=Path("prompts.txt"), out=Path("outputs/p"))
    run.plan()                 # every check, and what is left to make (resume), before any model loads
    sidecars = run.run()       # this process's share, batch by batch; `on_result` sees each sidecar

With a prompt file, `out` is a folder (`NNNN-<slug>.png/.json`): finished prompts are skipped when
run again; a finished prompt made with other settings, or with another prompt text under the same
file name, is refused by name (`overwrite=True` makes it again); see `ovi_cli.resume`. Batches are
`batch` consecutive lines dealt round robin to the shares (`--shard I/N`, torchrun ranks), so any
split writes the single-process files. While a run writes into a folder, another run with other
settings into the same folder is refused (`claim_folder`). Progress and lines for the user go
through the `Reporter`; nothing here prints.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ovi_cli.distributed import Launch, Share
from ovi_cli.errors import OviError
from ovi_cli.reporter import Reporter
from ovi_cli.resume import CLASH, NEW, REDO, check_resume, recorded_keys, refuse_clashes, resume_action
from ovi_cli.settings import GenSettings

RUN_FILE = ".ovi-gen.json"  # in a --prompts folder while runs write into it: their settings and pids
RESUME_ADVICE = "rerun with --overwrite to make them again, or choose another --out"


def plan_outputs(
    prompt: str | None, prompts_file: Path | None, out: Path | None, seed: int
) -> tuple[list[str], list[int], list[Path]]:
    """(prompts, seeds, image paths) for one prompt or a prompt file."""
    from ovi_cli.checks import check_output_file, check_output_folder
    from ovi_cli.outputs import default_output_path, slugify
    from ovi_cli.prompts import prompts_from

    prompts = prompts_from(prompt, prompts_file)
    if prompt is not None:
        path = check_output_file(out or default_output_path(prompt))
        if path.suffix.lower() != ".png":
            if path.suffix.lower() in (".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"):
                raise OviError(f"--out {str(path)!r}: ovi writes PNG images; name the file .png")
            path = path.with_suffix(path.suffix + ".png") if path.suffix else path.with_suffix(".png")
        return prompts, [seed], [path]
    assert prompts_file is not None
    folder = out or Path("outputs") / slugify(prompts_file.stem)
    if folder.suffix.lower() == ".png":
        raise OviError("with --prompts, --out is a folder, not a .png file")
    check_output_folder(folder)
    paths = [folder / f"{i:04d}-{slugify(p)}.png" for i, p in enumerate(prompts)]
    return prompts, [seed + i for i in range(len(prompts))], paths


def batch_groups(count: int, batch: int, share: Share) -> list[list[int]]:
    """The prompt indices of each batch this process makes: batches of `batch` consecutive lines,
    dealt round robin to the shares (fixed batches: any split gives the single-process files)."""
    groups = [list(range(s, min(count, s + batch))) for s in range(0, count, batch)]
    return [g for n, g in enumerate(groups) if share.owns(n)]


def read_sidecar(path: Path) -> dict | None:
    """A finished prompt's sidecar, or None (missing, or unreadable: then the prompt is made again)."""
    if not path.is_file():  # missing, or a folder, FIFO or device, which would block or never end
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# what a sidecar written before sidecars held "settings" still tells about them
LEGACY_SETTINGS = ("prior", "decoder", "tokens", "steps", "lr", "weight_decay", "negative")


def sidecar_settings(side: dict, new: dict) -> tuple[dict, dict]:
    """(old, new) settings to compare: the sidecar's own, or what an older sidecar recorded."""
    if isinstance(side.get("settings"), dict):  # a setting added since it was written is not compared
        old = side["settings"]
        return old, recorded_keys(old, new)
    keys = [k for k in LEGACY_SETTINGS if k in side]
    return {k: side[k] for k in keys}, {k: new[k] for k in keys}


def recorded_result(side: dict | None, prompt: str, settings: dict) -> tuple[dict | None, dict]:
    """(what a finished prompt recorded, what is asked now): its settings and its exact prompt text
    (`a red cube!` and `a red cube` share a file name, not a result)."""
    if side is None:
        return None, {}
    old, new = sidecar_settings(side, settings)
    return {**old, "prompt": side.get("prompt")}, {**new, "prompt": prompt}


def unfinished(todo: list[int], paths: list[Path], settings: GenSettings, overwrite: bool,
               prompts: Sequence[str] | None = None) -> list[int]:
    """The prompts of `todo` still to make: those without a sidecar (all of them with `overwrite`).

    A finished prompt made with other settings (or another prompt text) is refused, not skipped.
    """
    out, clashes = [], []
    asked = settings.to_dict()
    for i in todo:
        side = None if overwrite else read_sidecar(paths[i].with_suffix(".json"))
        prompt = prompts[i] if prompts is not None else (side or {}).get("prompt")
        recorded, now = recorded_result(side, prompt, asked)
        action, diffs = resume_action(recorded, now, overwrite=overwrite)
        if action in (NEW, REDO):
            out.append(i)
        elif action == CLASH:
            clashes.append((paths[i].name, diffs))
    if clashes:
        refuse_clashes(clashes, f"finished prompt(s) in {str(paths[0].parent)!r}", RESUME_ADVICE)
    return out


def check_gen_run(settings: GenSettings, paths: Sequence[Path], seeds: Sequence[int], batch: int) -> None:
    """`ovi gen` before anything loads: every number, the seeds of every prompt, every output file."""
    from ovi_cli.checks import MAX_BATCH, check_int, check_result_paths, check_seed

    check_int(batch, "--batch", minimum=1, maximum=MAX_BATCH)
    settings.check()
    if seeds:
        check_seed(min(seeds), count=max(seeds) - min(seeds) + 1)
    check_result_paths(paths)


# ---- one folder, one set of settings at a time ------------------------------------------------------
@contextmanager
def claim_folder(folder: Path, settings: dict[str, Any]) -> Iterator[None]:
    """Write into `folder` alongside only runs with the same settings (the shares of one run, torchrun's
    ranks); a run with other settings writing there now is refused by name. The claims live in
    `folder/.ovi-gen.json` (settings, and the host and pid of each writer), read and changed under the
    folder's lock (`ovi_stats.lock`); a claim whose process is gone (same host) no longer counts.
    Claims of other hosts are not seen (a SLURM array across machines shares settings by design).
    """
    from ovi_cli.outputs import atomic_write_json, ensure_folder
    from ovi_stats.lock import BuildInProgress, store_lock
    from ovi_stats.lock import _alive as alive

    me = {"host": socket.gethostname(), "pid": os.getpid()}
    path = folder / RUN_FILE

    def live(claims: Any) -> list[dict]:
        return [c for c in claims if isinstance(c, dict) and c.get("host") == me["host"] and
                isinstance(c.get("pid"), int) and c["pid"] != me["pid"] and alive(c["pid"])]

    def locked():
        try:
            return store_lock(folder)
        except BuildInProgress as exc:  # pragma: no cover - the lock is held for milliseconds
            raise OviError(f"another ovi run is starting in {str(folder)!r}; retry in a moment") from exc

    created = not folder.exists()
    ensure_folder(folder)
    with locked():
        data = read_sidecar(path) or {}
        others = live(data.get("writers") or [])
        if others:
            check_resume(data.get("settings") or {}, settings, f"the run writing into {str(folder)!r} now (pid "
                         f"{others[0]['pid']})", "wait for it to finish, or choose another --out", only_shared=True)
        atomic_write_json(path, {"settings": settings, "writers": [*others, me]})
    try:
        yield
    finally:
        try:
            with locked():
                data = read_sidecar(path) or {}
                rest = live(data.get("writers") or [])
                if rest:
                    atomic_write_json(path, {**data, "writers": rest})
                else:
                    path.unlink(missing_ok=True)
            if created:
                folder.rmdir()  # only when still empty: a run that failed before writing leaves no folder
        except (OviError, OSError):
            pass  # the claim of a gone process does not count: leaving it is harmless


# ---- the run ----------------------------------------------------------------------------------------
@dataclass
class GenRun:
    """One `ovi gen` run: `settings` (their `seed` is line 0's, their `batch` the prompts per batch),
    and a `prompt` or a `prompts_file`; `out` as `ovi gen --out`."""

    settings: GenSettings
    prompt: str | None = None
    prompts_file: Path | None = None
    out: Path | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    save_embedding: bool = False
    plot: bool = False
    model: str | None = None  # the `--model` preset, for its warnings about the prompts
    reporter: Reporter = field(default_factory=Reporter)
    launch: Launch = field(default_factory=Launch)

    # filled by plan()
    prompts: list[str] = field(default_factory=list, init=False)
    seeds: list[int] = field(default_factory=list, init=False)
    paths: list[Path] = field(default_factory=list, init=False)
    groups: list[list[int]] = field(default_factory=list, init=False)
    todo: list[int] = field(default_factory=list, init=False)
    _planned: bool = field(default=False, init=False)

    def plan(self) -> list[int]:
        """Every input checked (prompts, numbers, seeds, output files) and the prompts this process still
        has to make (resume), before any model loads; the prompt indices to make."""
        from ovi_cli.checks import refuse_stdin_when_distributed
        from ovi_cli.distributed import work_share

        refuse_stdin_when_distributed([self.prompts_file] if self.prompts_file else [], self.launch.distributed,
                                      "--prompts")
        self.prompts, self.seeds, self.paths = plan_outputs(self.prompt, self.prompts_file, self.out,
                                                            self.settings.seed)
        if self.prompts_file is None and (self.shard or self.launch.distributed):
            raise OviError("--shard and torchrun split a prompt file: give --prompts FILE")
        check_gen_run(self.settings, self.paths, self.seeds, self.settings.batch)
        self.groups = batch_groups(len(self.prompts), self.settings.batch, work_share(self.shard, self.launch))
        todo = [i for g in self.groups for i in g]
        if self.prompts_file is not None:
            todo = unfinished(todo, self.paths, self.settings, self.overwrite, self.prompts)
        self.todo = todo
        self._planned = True
        return todo

    @property
    def folder(self) -> Path | None:
        """The output folder of a prompt-file run (None for one prompt)."""
        return self.paths[0].parent if self.prompts_file is not None and self.paths else None

    def run(self, on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Load the models and make every unfinished prompt of this process's share, batch by batch;
        `on_result` gets each sidecar as its files land. Returns the sidecars."""
        from contextlib import nullcontext

        from ovi_cli.distributed import cuda_device_count, device_for
        from ovi_cli.pipeline import OviPipeline
        from ovi_cli.presets import prompt_warnings

        if not self._planned:
            self.plan()
        folder = self.folder
        claim = claim_folder(folder, self.settings.to_dict()) if folder is not None else nullcontext()
        with claim:
            if folder is not None and not self.overwrite:
                self.todo = unfinished(self.todo, self.paths, self.settings, False, self.prompts)  # now locked in
            device = device_for(self.settings.device, self.launch, cuda_device_count())
            pipe = OviPipeline(replace(self.settings, device=device), reporter=self.reporter)
            if self.launch.leader:
                for message in prompt_warnings(self.model, [self.prompts[i] for i in self.todo]):
                    self.reporter.warn(message)
            mine = sum(len(g) for g in self.groups)
            skipped = mine - len(self.todo)
            if skipped:
                self.reporter.info(f"resuming: {skipped} of {mine} prompts already done, skipped")
            todo = set(self.todo)
            batches = [idx for idx in ([i for i in g if i in todo] for g in self.groups) if idx]
            out: list[dict[str, Any]] = []
            for idx in batches:
                self.reporter.new_batch(f"[{idx[0] + 1}/{len(self.paths)}]" if len(self.paths) > 1 else "")
                sidecars = pipe.generate([self.prompts[i] for i in idx], [self.paths[i] for i in idx],
                                         seeds=[self.seeds[i] for i in idx], save_embedding=self.save_embedding)
                if self.plot:
                    from ovi_cli.plots import write_gen_plots

                    write_gen_plots(sidecars, [self.paths[i] for i in idx], self.reporter.warn)
                for sc in sidecars:
                    if on_result is not None:
                        on_result(sc)
                out += sidecars
            return out
