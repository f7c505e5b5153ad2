"""Fewer OVI steps, same result: learning-rate schedules against the paper's setting.

    .venv/bin/python benchmarks/schedule_search.py --world toy --n 48          # trained toy CLIP
    .venv/bin/python benchmarks/schedule_search.py --world tiny --n 8
    .venv/bin/python benchmarks/schedule_search.py --world vit-b-32 --n 8 --constraint mahalanobis
    .venv/bin/python benchmarks/schedule_search.py --world toy --candidates "fast,120:1.5:0.05:cosine:0"

Every candidate runs the engine (`ovi_cli.engine.optimize`, its `--dtype auto` on this machine) on
the same prompts/targets and seeds as the paper's setting (`paper`: 500 steps, constant lr 2e-2,
AdamW weight decay 0.01, 6 tokens), and is scored the same way: one float32 forward of the final
pseudo-tokens gives the final text cosine and, with `--constraint`, the constrained objective
`(1 - cos) + weight * term` (the term evaluated afresh on that embedding). Printed per candidate:
steps, mean final cosine, mean and worst per-prompt difference to `paper` (cosine, and objective
where constrained), and the engine's seconds. The paper run's own cosine at a third of its steps
(history, engine dtype) shows what simply stopping early would give.

Worlds: `toy` = the shipped trained toy CLIP (`plugins/toy/models/prior`) on held-out toy prompts,
with its real stats store for constraints; `tiny`, `vit-b-32`, `vit-l-14` = random-weight towers of
`benchmarks/ovi_speed.py` with its `mix` targets; for constraints on those a store is written from
the tower's embeddings of `--store-images` random smooth images (a temporary folder).

A candidate is a preset name (`paper`, `fast`) or `STEPS:PEAK_FACTOR:WARMUP:DECAY:FINAL[:BETA1:BETA2][:init=STD]`
(peak lr = PEAK_FACTOR * --lr, WARMUP a fraction of the steps, DECAY constant|cosine|linear, FINAL the
end lr as a fraction of the peak). The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ovi_speed  # noqa: E402

from ovi_cli.devices import resolve_dtype  # noqa: E402
from ovi_cli.engine import optimize  # noqa: E402
from ovi_cli.pseudo_tokens import encode_pseudo_tokens, ovi_forward  # noqa: E402
from ovi_cli.schedule import SCHEDULES, Schedule  # noqa: E402
from ovi_cli.settings import OviSettings  # noqa: E402


def parse_candidate(spec: str) -> tuple[str, Schedule, dict]:
    """(label, schedule, settings overrides) from a preset name or `STEPS:PF:WARMUP:DECAY:FINAL[:B1:B2][:key=V]`.

    Schedule `hold=H` (fraction held at the peak before the decay); settings overrides `init=STD`
    (init_std), `wd=W` (weight_decay), `tokens=P`.
    """
    spec = spec.strip()
    if spec in SCHEDULES:
        return spec, SCHEDULES[spec], {}
    parts = spec.split(":")
    names = {"init": "init_std", "wd": "weight_decay", "tokens": "tokens"}
    init, hold = {}, 0.0
    while "=" in parts[-1]:
        k, v = parts.pop().split("=")
        if k == "hold":
            hold = float(v)
        else:
            init[names[k]] = int(v) if k == "tokens" else float(v)
    steps, pf, warm, decay, final = int(parts[0]), float(parts[1]), float(parts[2]), parts[3], float(parts[4])
    betas = (float(parts[5]), float(parts[6])) if len(parts) >= 7 else (0.9, 0.999)
    return spec, Schedule(spec, steps=steps, peak_factor=pf, warmup=warm, decay=decay, final_fraction=final,
                          betas=betas, hold=hold), init


class _Enc:
    """What a constraint needs of the encoders: the embedding width."""

    def __init__(self, dim: int) -> None:
        self.embed_dim = dim


def make_world(args):
    """(forward-builder(dtype), float32 scorer, token width, targets [B, D], seeds, store or None, label)."""
    seeds = list(range(args.seed, args.seed + args.n))
    if args.world == "toy":
        from ovi_cli.encoders import Encoders
        from ovi_plugins.toy.dataset import heldout_prompts
        from ovi_plugins.toy.preset import toy_paths

        paths = toy_paths()
        enc = Encoders.load(str(paths["encoder"]))
        prompts = heldout_prompts(args.n, args.seed)
        targets = enc.encode_text(prompts).text_embeds
        model = enc.image_encoder
        store = None
        if args.constraint:
            from ovi_stats.store import open_store

            store = open_store(str(paths["stats"]))
        label = f"toy CLIP ({enc.token_width} wide), {len(prompts)} held-out prompts"
        return model, targets, seeds, store, label
    model = ovi_speed.build_tower(args.world, torch.device("cpu"))
    targets = ovi_speed.make_targets(model, args.n, "mix", args.seed)
    store = None
    if args.constraint:
        store = synthetic_store(model, args.store_images, Path(tempfile.mkdtemp(prefix="ovi-sched-store-")))
    return model, targets, seeds, store, f"random {args.world} tower, {args.n} mix targets"


def synthetic_store(model, n: int, path: Path):
    """A stats store of the tower's embeddings of `n` random smooth colour images."""
    from ovi_stats.store import write_store

    size = model.config.image_size
    gen = torch.Generator().manual_seed(123)
    embs = []
    with torch.no_grad():
        for i in range(0, n, 32):
            b = min(32, n - i)
            low = torch.randn(b, 3, 4, 4, generator=gen) + torch.randn(b, 3, 1, 1, generator=gen)
            pix = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                embs.append(model(pixel_values=pix).image_embeds.float())
    emb = torch.cat(embs).numpy()
    files = [f"img{i:05d}" for i in range(n)]
    return write_store(path, emb, files, encoder={"source": "random", "fingerprint": "none"}, index="flat")


def make_constraint(name_weight: str, store, dim: int):
    from ovi_cli.api import ConstraintContext
    from ovi_plugins.constraints import MahalanobisConstraint, NearestNeighborConstraint

    name, _, w = name_weight.partition(":")
    cls = {"mahalanobis": MahalanobisConstraint, "nn": NearestNeighborConstraint}[name]
    weight = float(w) if w else cls.default_weight
    ctx = ConstraintContext(encoders=_Enc(dim), device=torch.device("cpu"), dtype=torch.float32, store=store,
                            options={"k": 1, "every": 1}, weight=weight)
    return cls(ctx)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", choices=("toy", "tiny", "vit-b-32", "vit-l-14"), default="toy")
    ap.add_argument("--n", type=int, default=16, help="prompts (toy) or targets (random towers)")
    ap.add_argument("--batch", type=int, default=16, help="prompts per engine call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--candidates", default="fast", help="comma-separated (see the module docstring)")
    ap.add_argument("--constraint", default=None, help="mahalanobis[:W] or nn[:W]")
    ap.add_argument("--store-images", type=int, default=2048)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-paper", action="store_true", help="skip the paper run (then no differences)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, targets, seeds, store, label = make_world(args)
    width = model.config.hidden_size
    dim = model.config.projection_dim
    dtype = resolve_dtype(args.dtype, "cpu", ovi_token_width=width)
    forward = ovi_forward(model, dtype)
    constraint = make_constraint(args.constraint, store, dim) if args.constraint else None
    print(f"# {label}; engine dtype {str(dtype)[6:]}, {args.tokens} tokens, lr {args.lr:g}, "
          f"constraint {args.constraint or 'none'}; machine {ovi_speed.describe_machine(torch.device('cpu'))}",
          flush=True)

    def score(tokens: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
        with torch.no_grad():
            emb = encode_pseudo_tokens(model, tokens.float()).float()
            cos = F.cosine_similarity(emb, targets, dim=-1)
            term = constraint.term(emb, 0, torch.arange(len(emb))) if constraint else torch.zeros_like(cos)
            obj = (1 - cos) + (constraint.weight * term if constraint else 0)
        return cos.tolist(), obj.tolist(), term.tolist()

    def run(sched: Schedule, overrides: dict) -> dict:
        settings = OviSettings(tokens=args.tokens, steps=sched.steps, lr=args.lr, schedule=sched)
        settings = replace(settings, **overrides)
        toks, hist, lhist, secs = [], [], [], 0.0
        for s in range(0, len(seeds), args.batch):
            t = time.perf_counter()
            res = optimize(forward, targets[s : s + args.batch], token_width=width, seeds=seeds[s : s + args.batch],
                           settings=settings, constraints=[constraint] if constraint else [],
                           device="cpu", dtype=dtype)
            secs += time.perf_counter() - t
            toks.append(res.tokens)
            hist += [h["text_cosine"] for h in res.history]
            lhist += [h["loss"] for h in res.history]
        cos, obj, term = score(torch.cat(toks))
        return {"cos": cos, "objective": obj, "term": term, "seconds": secs, "history": hist, "loss_history": lhist}

    rows = []
    paper = None if args.no_paper else run(SCHEDULES["paper"], {})
    if paper is not None:
        third = 500 // 3
        paper_third = [h[third] for h in paper["history"]]
        print(f"paper: 500 steps  cos {np.mean(paper['cos']):.5f}  objective {np.mean(paper['objective']):.5f}  "
              f"({paper['seconds']:.1f}s); its own cos at step {third}: {np.mean(paper_third):.5f} "
              f"objective {np.mean([h[third] for h in paper['loss_history']]):.5f} "
              f"(worst prompt {min(np.array(paper_third) - np.array([h[-1] for h in paper['history']])):+.5f} vs its "
              "last step)", flush=True)
    for spec in [c for c in args.candidates.split(",") if c.strip()]:
        name, sched, init = parse_candidate(spec)
        r = run(sched, init)
        best_seen = float(np.mean([max(h) for h in r["history"]]))  # best pre-update cosine of each prompt
        row = {"candidate": name, "steps": sched.steps, "cos_mean": float(np.mean(r["cos"])), "best_seen": best_seen,
               "objective_mean": float(np.mean(r["objective"])), "seconds": r["seconds"]}
        if paper is not None:
            dc = np.array(r["cos"]) - np.array(paper["cos"])
            do = np.array(r["objective"]) - np.array(paper["objective"])
            row.update(dcos_mean=float(dc.mean()), dcos_worst=float(dc.min()),
                       dobj_mean=float(do.mean()), dobj_worst=float(do.max()),
                       within_0005=bool(dc.mean() >= -0.005 and (constraint is None or do.mean() <= 0.005)))
        rows.append(row)
        print(f"{name:40s} {sched.steps:4d} steps  cos {row['cos_mean']:.5f}"
              + (f"  dcos mean {row['dcos_mean']:+.5f} worst {row['dcos_worst']:+.5f}" if paper else "")
              + (f"  obj {row['objective_mean']:.5f} dobj mean {row['dobj_mean']:+.5f} worst {row['dobj_worst']:+.5f}"
                 if paper and constraint else "")
              + f"  best-seen {best_seen:.5f}  ({r['seconds']:.1f}s)", flush=True)
    out = {"world": args.world, "label": label, "n": args.n, "dtype": str(dtype)[6:], "constraint": args.constraint,
           "paper": None if paper is None else {"cos_mean": float(np.mean(paper["cos"])),
                                                 "objective_mean": float(np.mean(paper["objective"])),
                                                 "seconds": paper["seconds"]},
           "candidates": rows, "seconds_total": time.perf_counter() - t0}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
