"""`ovi eval toy`: the benchmark harness's toy preset (the paper's comparison at toy scale, offline).

For each method (textemb, ovi, ovi+mahalanobis at a few weights, ovi+nn, the trained toy prior) it
runs the library's bench run and score run, exactly what these commands run:

    ovi bench generate toy --model toy --out OUT/<method> --prior P [-c C] --steps S -k K [--limit N]
    ovi bench score OUT/<method> --scorers oracle,clip-score --model toy

plus a `real` run of freshly rendered real images of the same prompts (the ceiling), then one
`ovi bench table` of all runs, written to OUT/table.{md,csv,json,png}. Every step resumes: rerun
the same command after an interrupt. Scores: `oracle` (fraction of the prompt's coloured shapes
found, colour and shape bound; CLIP-free) and `clip-score` with the toy CLIP.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovi_cli.errors import OviError
from ovi_cli.reporter import Reporter
from ovi_cli.settings import GenSettings

DEFAULT_MAHALANOBIS_WEIGHTS = (0.003, 0.03, 1.0)
SCORERS = ["oracle", "clip-score"]
REAL = "real"


@dataclass
class Method:
    label: str
    prior: str
    constraints: list[str] = field(default_factory=list)


def default_methods(mahalanobis_weights: tuple[float, ...] = DEFAULT_MAHALANOBIS_WEIGHTS) -> list[Method]:
    out = [Method("textemb", "textemb"), Method("ovi", "ovi")]
    out += [Method(f"ovi+mahalanobis:{w:g}", "ovi", [f"mahalanobis:{w:g}"]) for w in mahalanobis_weights]
    out += [Method("ovi+nn", "ovi", ["nn"]), Method("toy-prior", "toy-prior")]
    return out


def run_folder(out: Path, label: str) -> Path:
    from ovi_cli.outputs import slugify

    return Path(out) / slugify(label.replace(":", "-").replace("+", "-plus-"))


def method_settings(method: Method, *, steps: int, seed: int, **overrides: Any) -> GenSettings:
    """The settings `ovi bench generate toy --model toy --prior P [-c C] --steps S --seed SEED` runs with
    (`overrides`: more flags, e.g. `schedule="fast"`); the toy preset fills what is not given."""
    from ovi_cli.presets import apply_model

    given = {"prior": method.prior, "constraints": list(method.constraints), "steps": steps, "seed": seed,
             **overrides}
    return apply_model(GenSettings(**given), "toy", set(given))


def models_overrides(models: Path | None) -> dict[str, Any]:
    """The settings that point `--model toy` at another trained toy folder (`ovi toy train --out DIR`):
    its CLIP towers, decoder, stats store and toy prior. None: the shipped models (no overrides)."""
    from ovi_plugins.toy.preset import toy_paths

    if models is None:
        return {}
    paths = toy_paths(Path(models))
    for path in paths.values():
        if not path.is_dir():
            raise OviError(f"--models {str(models)!r} is not a toy models folder (made by `ovi toy train "
                           f"--out DIR`): it has no {path.name}/")
    return {"encoder_model": str(paths["encoder"]), "decoder_model": str(paths["decoder"]),
            "stats": str(paths["stats"]), "options": {"toy-prior": {"model": str(paths["prior"])}}}


def write_real_run(run: Path, *, images_per_prompt: int, seed: int, limit: int | None) -> None:
    """Real rendered images of the toy prompts in the benchmark layout (skips images already there)."""
    import numpy as np

    from ovi_cli.bench import layout
    from ovi_cli.outputs import atomic_outputs, atomic_write_json
    from ovi_plugins.toy.benchmark import ToyBenchmark
    from ovi_plugins.toy.dataset import parse_prompt, render, scene_for_objects

    bench = ToyBenchmark()
    for c, category in enumerate(bench.categories):
        prompts = bench.prompts(category)[:limit]
        for i, prompt in enumerate(prompts):
            for j in range(images_per_prompt):
                index = layout.sample_index(i, j, images_per_prompt)
                path = layout.sample_path(run, category, prompt, index)
                if path.exists():
                    continue
                rng = np.random.default_rng([seed, c, index])
                image = render(scene_for_objects(parse_prompt(prompt), rng))
                with atomic_outputs() as staging:
                    staging.write_with(path, lambda p, im=image: im.save(p, format="PNG"))
    atomic_write_json(layout.bench_json_path(run), {
        "benchmark": "toy", "settings": {"prior": REAL, "images_per_prompt": images_per_prompt, "seed": seed},
        "categories": list(bench.categories), "note": "real rendered images of the prompts: the ceiling"})


def generate_runs(out: Path, *, steps: int = 300, images_per_prompt: int = 1, seed: int = 42,
                  limit: int | None = None, methods: list[Method] | None = None, real: bool = True,
                  reporter: Reporter | None = None, overrides: dict[str, Any] | None = None) -> list[Path]:
    """The toy benchmark's bench run for every method (and the real images); the run folders in table
    order. Every run is planned (checked) before the first one starts; each resumes."""
    from ovi_cli.bench.generate import BenchOptions, plan_bench_run

    if steps < 1 or images_per_prompt < 1 or (limit is not None and limit < 1):
        raise OviError("--steps, --images-per-prompt and --prompts must be >= 1")
    methods = methods if methods is not None else default_methods()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OviError(f"--out {str(out)!r} is a file; give a folder")
    options = BenchOptions(images_per_prompt=images_per_prompt, seed=seed)
    planned = [(m, plan_bench_run("toy", run_folder(out, m.label),
                                  method_settings(m, steps=steps, seed=seed, **(overrides or {})), options,
                                  limit=limit)) for m in methods]
    runs = []
    if real:
        runs.append(run_folder(out, REAL))
        write_real_run(runs[-1], images_per_prompt=images_per_prompt, seed=seed, limit=limit)
    for _, run in planned:
        runs.append(run.run)
        run.execute(reporter)
    return runs


def score_runs(runs: list[Path], reporter: Reporter | None = None, encoder_model: str | None = None) -> None:
    """The score run of `ovi bench score RUN --scorers oracle,clip-score --model toy` for every run
    (`encoder_model`: the clip score in that CLIP, e.g. a `--models` folder's, instead of the shipped one)."""
    from ovi_cli.bench.score import ScoreRequest, score_run
    from ovi_plugins.toy.preset import toy_paths

    request = ScoreRequest(scorers=list(SCORERS), encoder_model=encoder_model or str(toy_paths()["encoder"]))
    for run in runs:
        score_run(run, request, reporter=reporter)


def run_eval(out: Path, **kwargs: Any) -> list[Path]:
    """`generate_runs` then `score_runs` (silent unless a `reporter` is given); the run folders."""
    kwargs["overrides"] = {**models_overrides(kwargs.pop("models", None)), **(kwargs.get("overrides") or {})}
    runs = generate_runs(out, **kwargs)
    score_runs(runs, kwargs.get("reporter"), kwargs["overrides"].get("encoder_model"))
    return runs


def write_table(out: Path, runs: list[Path]):
    """OUT/table.md, table.csv, table.json and table.png of the runs; returns the table."""
    from ovi_cli.bench.table import build_table, load_run, render_plot, to_csv, to_json, to_markdown
    from ovi_cli.outputs import atomic_outputs

    table = build_table([load_run(r) for r in runs])
    with atomic_outputs() as staging:
        staging.write_text(out / "table.md", to_markdown(table))
        staging.write_text(out / "table.csv", to_csv(table))
        staging.write_text(out / "table.json", json.dumps(to_json(table), indent=2) + "\n")
        staging.write_with(out / "table.png", lambda p: render_plot(p, table, "ovi eval toy"))
    return table


__all__ = ["run_eval", "generate_runs", "score_runs", "write_table", "default_methods", "Method"]
