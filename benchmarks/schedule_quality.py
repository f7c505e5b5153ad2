"""Do the images get worse with `--schedule fast`? The toy eval with both schedules and several seeds.

    .venv/bin/python benchmarks/schedule_quality.py                    # 48 prompts, seeds 0 1 2
    .venv/bin/python benchmarks/schedule_quality.py --prompts 96 --seeds 0,1

Runs `ovi_cli.toy.eval.run_eval` (oracle object accuracy, exact, colour accuracy, toy-CLIP score,
FID, ...) once per (schedule, seed) on the same held-out prompts (those of seed 0: the prompt list
is held fixed, so that the seed changes only the pseudo-token start, the decoder noise and the
reference images), each schedule at its own step count (paper 500, fast: its preset's).
Noise = how much the same schedule's numbers move between seeds; the schedules' difference at
the same seed is compared with it. The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from schedule_search import parse_candidate  # noqa: E402

from ovi_cli import settings as settings_mod  # noqa: E402
from ovi_cli.toy import eval as toy_eval  # noqa: E402

METRICS = ("oracle_object_acc", "oracle_exact", "oracle_colour_acc", "clip_score", "embed_text_cosine", "fid")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--schedules", default="paper,fast",
                    help="comma-separated preset names or schedule_search.py candidate specs (STEPS:PF:...)")
    ap.add_argument("--methods", default="ovi,ovi+nn,ovi+mahalanobis:0.03",
                    help="comma-separated: ovi, ovi+nn, ovi+mahalanobis:W")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = []
    for m in args.methods.split(","):
        cons = [m.split("+", 1)[1]] if "+" in m else []
        methods.append(toy_eval.Method(m, "ovi", cons))
    fixed_prompts = toy_eval.heldout_prompts(args.prompts, 0)

    t0 = time.perf_counter()
    results: dict[str, dict[int, dict[str, dict]]] = {}
    base = settings_mod.GenSettings
    for seed in seeds:
        for name in args.schedules.split(","):
            sched = parse_candidate(name)[1]
            steps = sched.steps
            with tempfile.TemporaryDirectory() as tmp, \
                    mock.patch.object(settings_mod, "GenSettings", functools.partial(base, schedule=sched)), \
                    mock.patch.object(toy_eval, "heldout_prompts", lambda n, s: fixed_prompts[:n]):
                res = toy_eval.run_eval(Path(tmp), prompts=args.prompts, steps=steps, seed=seed, methods=methods)
            rows = {r["method"]: r for r in res.rows}
            results.setdefault(name, {})[seed] = rows
            for m in methods:
                r = rows[m.label]
                print(f"seed {seed} {name:6s} {m.label:24s} oracle {r['oracle_object_acc']:.4f} exact "
                      f"{r['oracle_exact']:.4f} clip {r['clip_score']:.4f} embed-cos {r['embed_text_cosine']:.4f} "
                      f"fid {r['fid']:.3f} ({r['seconds']:.1f}s)", flush=True)

    names = args.schedules.split(",")
    summary = {}
    for m in methods:
        per = {}
        for metric in METRICS:
            vals = {n: np.array([results[n][s][m.label][metric] for s in seeds]) for n in names}
            entry = {n: {"mean": float(v.mean()), "by_seed": v.tolist()} for n, v in vals.items()}
            # seed noise: spread of each schedule's value over seeds (max - min), and the pairwise
            # differences between seeds of the same schedule
            spreads = [float(v.max() - v.min()) for v in vals.values()]
            diffs = [abs(a - b) for v in vals.values() for i, a in enumerate(v) for b in v[i + 1:]]
            entry["seed_noise_max_abs_diff"] = float(max(diffs)) if diffs else None
            entry["seed_spread"] = max(spreads)
            if len(names) == 2:
                d = vals[names[1]] - vals[names[0]]
                entry[f"{names[1]}_minus_{names[0]}"] = {"by_seed": d.tolist(), "mean": float(d.mean())}
            per[metric] = entry
        summary[m.label] = per
        print(f"{m.label}: " + "; ".join(
            f"{metric} " + " ".join(f"{n} {per[metric][n]['mean']:.4f}" for n in names)
            + (f" diff {per[metric][f'{names[1]}_minus_{names[0]}']['mean']:+.4f}" if len(names) == 2 else "")
            + f" seed-noise {per[metric]['seed_noise_max_abs_diff']:.4f}"
            for metric in ("oracle_object_acc", "clip_score", "embed_text_cosine")), flush=True)
    out = {"prompts": args.prompts, "seeds": seeds, "schedules": {n: parse_candidate(n)[1].steps for n in names},
           "summary": summary, "seconds_total": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
