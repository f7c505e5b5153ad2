"""Do the images get worse with `--schedule fast`? The toy benchmark with both schedules, several seeds.

    .venv/bin/python benchmarks/schedule_quality.py                          # seeds 0 1 2, 2 images/prompt
    .venv/bin/python benchmarks/schedule_quality.py --seeds 0,1,2,3,4 --methods ovi

Runs `ovi eval toy`'s harness (`ovi_plugins.toy.eval`: `ovi bench generate toy --model toy` per
method, then `ovi bench score --scorers oracle,clip-score --model toy`) once per (schedule, seed),
each schedule at its own step count (`--schedule paper`: 500, `--schedule fast`: 160), on the toy
benchmark's 36 held-out prompts (12 single shapes, 24 two-object bindings) with `-k` images per
prompt. Noise = how much the same schedule's scores move between seeds; the schedules' difference
at the same seed is compared with it. The LAST line printed is JSON.

The measurements in benchmarks/RESULTS.md (48 prompts, 9 seeds) were made with the toy eval as it
was before the bench harness replaced it: `git checkout 030b12c` and run this script from there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovi_cli.schedule import SCHEDULES  # noqa: E402


def run_scores(run: Path) -> dict[str, float]:
    """`{"<category>:<scorer>": mean, ..., "all:<scorer>": image-weighted mean}` of one scored run."""
    from ovi_cli.bench.table import build_table, load_run, to_json

    row = to_json(build_table([load_run(run)]))["rows"][0]["scores"]
    out = {k: v["mean"] for k, v in row.items() if v["mean"] is not None}
    for scorer in {k.split(":", 1)[1] for k in out}:
        cells = [v for k, v in row.items() if k.endswith(f":{scorer}") and v["mean"] is not None]
        n = sum(c["images"] or 0 for c in cells)
        out[f"all:{scorer}"] = sum(c["mean"] * (c["images"] or 0) for c in cells) / n if n else float("nan")
    return out


def main(argv: list[str] | None = None) -> dict:
    from ovi_plugins.toy import eval as toy_eval

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--schedules", default="paper,fast")
    ap.add_argument("--images-per-prompt", "-k", type=int, default=2)
    ap.add_argument("--methods", default="ovi,ovi+nn,ovi+mahalanobis:0.03",
                    help="comma-separated: ovi, ovi+nn, ovi+mahalanobis:W")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.schedules.split(",")
    methods = [toy_eval.Method(m, "ovi", [m.split("+", 1)[1]] if "+" in m else []) for m in args.methods.split(",")]

    t0 = time.perf_counter()
    scores: dict[str, dict[str, list[dict[str, float]]]] = {n: {m.label: [] for m in methods} for n in names}
    for seed in seeds:
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                runs = toy_eval.generate_runs(Path(tmp), steps=SCHEDULES[name].steps, seed=seed, methods=methods,
                                              images_per_prompt=args.images_per_prompt, real=False,
                                              overrides={"schedule": name})
                toy_eval.score_runs(runs)
                for m, run in zip(methods, runs):
                    s = run_scores(run)
                    scores[name][m.label].append(s)
                    print(f"seed {seed} {name:6s} {m.label:24s} oracle {s.get('all:oracle', float('nan')):.4f} "
                          f"clip {s.get('all:clip-score', float('nan')):.4f}  ({time.perf_counter() - t:.0f}s)",
                          flush=True)

    summary: dict = {}
    for m in methods:
        summary[m.label] = {}
        keys = sorted(scores[names[0]][m.label][0])
        for key in keys:
            vals = {n: np.array([s[key] for s in scores[n][m.label]]) for n in names}
            entry: dict = {n: {"mean": float(v.mean()), "by_seed": v.tolist(),
                               "seed_sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                               "seed_range": float(v.max() - v.min())} for n, v in vals.items()}
            if len(names) == 2:
                d = vals[names[1]] - vals[names[0]]
                entry["difference"] = {"mean": float(d.mean()), "by_seed": d.tolist(),
                                       "lower_in": int((d < 0).sum()), "seeds": len(d)}
            summary[m.label][key] = entry
        if len(names) == 2:
            print(f"{m.label}: " + "; ".join(
                f"{k} {names[0]} {summary[m.label][k][names[0]]['mean']:.4f} {names[1]} "
                f"{summary[m.label][k][names[1]]['mean']:.4f} diff {summary[m.label][k]['difference']['mean']:+.4f} "
                f"(lower in {summary[m.label][k]['difference']['lower_in']}/{len(seeds)}; seed sd "
                f"{summary[m.label][k][names[0]]['seed_sd'] or 0:.4f})"
                for k in keys if k.startswith("all:")), flush=True)
    out = {"seeds": seeds, "images_per_prompt": args.images_per_prompt,
           "schedules": {n: SCHEDULES[n].steps for n in names}, "summary": summary,
           "seconds_total": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
