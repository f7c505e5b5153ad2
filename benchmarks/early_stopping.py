"""Early stopping on a *trained* CLIP: steps saved and final-cosine change per (patience, min_delta).

    .venv/bin/python benchmarks/early_stopping.py                  # the shipped toy CLIP, 32 prompts
    .venv/bin/python benchmarks/early_stopping.py --encoder-model DIR --prompts FILE --steps 500

Runs the engine once without early stopping (the paper setting: a fixed number of steps) and once
per (patience, min_delta) pair, same prompts and seeds, and prints for each: mean steps used,
mean and worst change of the final text cosine against the fixed-step run. The random-weight
towers of `ovi_speed.py` do not have a trained tower's loss curve; this one does (a small one).
The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovi_cli.devices import resolve_dtype  # noqa: E402
from ovi_cli.encoders import Encoders  # noqa: E402
from ovi_cli.engine import OviSettings, optimize  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--encoder-model", default=None, help="kandinsky-2-2-prior layout folder (default: the toy CLIP)")
    ap.add_argument("--prompts", type=Path, default=None, help="one prompt per line (default: toy held-out prompts)")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--grid", default="20:1e-4,50:1e-4,100:1e-4,20:1e-3,50:1e-3,100:1e-3",
                    help="comma-separated patience:min_delta pairs")
    args = ap.parse_args(argv)

    if args.encoder_model is None:
        from ovi_plugins.toy.preset import toy_paths

        args.encoder_model = str(toy_paths()["encoder"])
    if args.prompts is None:
        from ovi_plugins.toy.dataset import heldout_prompts

        prompts = heldout_prompts(args.n)
    else:
        prompts = [ln.strip() for ln in args.prompts.read_text().splitlines() if ln.strip()][: args.n]
    enc = Encoders.load(args.encoder_model)
    dtype = resolve_dtype("auto", enc.device, ovi_token_width=enc.token_width)
    print(f"# {args.encoder_model}: {len(prompts)} prompts, {args.steps} steps, dtype {str(dtype)[6:]}", flush=True)

    def run(patience: int, min_delta: float):
        cos, used, secs = [], [], 0.0
        for s in range(0, len(prompts), args.batch):
            chunk = prompts[s : s + args.batch]
            text = enc.encode_text(chunk).text_embeds
            t = time.perf_counter()
            res = optimize(enc.encode_pseudo_tokens, text, token_width=enc.token_width,
                           seeds=list(range(s, s + len(chunk))), device=enc.device, dtype=dtype,
                           settings=OviSettings(tokens=args.tokens, steps=args.steps, patience=patience,
                                                min_delta=min_delta))
            secs += time.perf_counter() - t
            cos += res.text_cosine
            used += res.steps_used
        return cos, used, secs

    base_cos, _, base_s = run(0, 0.0)
    rows = [{"patience": 0, "min_delta": 0.0, "steps_used_mean": float(args.steps), "cos_mean": _mean(base_cos),
             "dcos_mean": 0.0, "dcos_worst": 0.0, "seconds": base_s}]
    print(f"patience   0              steps {args.steps:6.1f}  cos {_mean(base_cos):.4f}  {base_s:.1f}s", flush=True)
    for item in args.grid.split(","):
        p, d = item.split(":")
        cos, used, secs = run(int(p), float(d))
        diffs = [a - b for a, b in zip(cos, base_cos)]
        row = {"patience": int(p), "min_delta": float(d), "steps_used_mean": _mean(used), "cos_mean": _mean(cos),
               "dcos_mean": _mean(diffs), "dcos_worst": min(diffs), "seconds": secs}
        rows.append(row)
        print(f"patience {int(p):3d} min_delta {float(d):.0e}  steps {row['steps_used_mean']:6.1f}  "
              f"cos {row['cos_mean']:.4f}  dcos mean {row['dcos_mean']:+.5f} worst {row['dcos_worst']:+.5f}  "
              f"{secs:.1f}s", flush=True)
    result = {"encoder": args.encoder_model, "prompts": len(prompts), "steps": args.steps, "rows": rows}
    print(json.dumps(result))
    return result


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


if __name__ == "__main__":
    main()
