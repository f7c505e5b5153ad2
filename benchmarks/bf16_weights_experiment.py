"""bf16 weights for OVI's loop: a bf16-Linear copy of the frozen tower vs bf16 autocast of float32 weights.

    .venv/bin/python benchmarks/bf16_weights_experiment.py                  # tiny and vit-b-32, batch 8
    .venv/bin/python benchmarks/bf16_weights_experiment.py --shapes vit-b-32 --steps 20 --repeats 3

Under bf16 autocast a float32 tower's Linear weights are cast to bf16 on every forward (and the
casts' graph kept for backward). OVI's loop now runs `ovi_cli.pseudo_tokens.ovi_forward(model,
bf16)`: a copy of the tower whose Linear weights are cast once (LayerNorms and embeddings shared,
float32). Both variants run the engine (`optimize`, `--schedule fast`'s settings, `--steps` steps)
on the same targets and seeds, alternately, `--repeats` times; the fastest run of each counts.
It also checks that the two give bit-identical tokens (autocast rounds the same way) and that a
float32 run is untouched (`ovi_forward(model, float32)` is the model itself). The LAST line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ovi_speed as b  # noqa: E402

from ovi_cli.engine import optimize  # noqa: E402
from ovi_cli.pseudo_tokens import encode_pseudo_tokens, ovi_forward  # noqa: E402
from ovi_cli.settings import OviSettings  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="tiny,vit-b-32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    out = {"device": b.describe_machine(dev), "batch": args.batch, "steps": args.steps, "shapes": {}}
    print(f"# {out['device']}; batch {args.batch}, {args.steps} steps, fastest of {args.repeats}", flush=True)
    for shape in args.shapes.split(","):
        m32 = b.build_tower(shape, dev)
        width = m32.config.hidden_size
        targets = b.make_targets(m32, args.batch, "mix", 0)
        settings = OviSettings(steps=args.steps, schedule="fast")
        variants = {
            "autocast_float32_weights": lambda x, m=m32: encode_pseudo_tokens(m, x),
            "bf16_linear_copy": ovi_forward(m32, torch.bfloat16),
        }
        best, tokens = {k: float("inf") for k in variants}, {}
        for rnd in range(args.repeats + 1):  # round 0 warms up
            for name, fwd in variants.items():
                t = time.perf_counter()
                r = optimize(fwd, targets, token_width=width, seeds=list(range(args.batch)), settings=settings,
                             device=dev, dtype=torch.bfloat16)
                if rnd:
                    best[name] = min(best[name], time.perf_counter() - t)
                tokens[name] = r.tokens
        same = bool(torch.equal(tokens["autocast_float32_weights"], tokens["bf16_linear_copy"]))
        ratio = best["autocast_float32_weights"] / best["bf16_linear_copy"]
        out["shapes"][shape] = {"seconds": best, "speedup": ratio, "bit_identical": same}
        print(f"{shape}: autocast of float32 weights {best['autocast_float32_weights']:.2f}s, bf16 Linear copy "
              f"{best['bf16_linear_copy']:.2f}s: {ratio:.2f}x; tokens bit-identical: {same}", flush=True)
    from ovi_cli.pseudo_tokens import ovi_tower

    m = b.build_tower("tiny", dev)
    out["float32_is_the_model_itself"] = ovi_tower(m, torch.float32) is m
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
