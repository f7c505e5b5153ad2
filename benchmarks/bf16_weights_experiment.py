"""Experiment: OVI on CPU under bf16 autocast with float32 vs bfloat16 Linear weights (frozen tower).

Autocast re-casts float32 weights to bfloat16 on every forward; frozen weights could be cast once.
Run: python benchmarks/bf16_weights_experiment.py  (prints seconds and mean final cosine per variant).
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import ovi_speed as b  # noqa: E402

from ovi_cli.engine import OviSettings, optimize
from ovi_cli.pseudo_tokens import encode_pseudo_tokens

torch.set_num_threads(1)


def lin_bf16(m: torch.nn.Module) -> torch.nn.Module:
    """Cast only the Linear layers (CPU layer_norm needs float32 parameters under autocast)."""
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.to(torch.bfloat16)
    return m
dev = torch.device('cpu')
for shape in ('tiny', 'vit-b-32'):
    m32 = b.build_tower(shape, dev)
    tg = b.make_targets(m32, 8, 'mix', 0)
    width = b.SHAPES[shape][0]
    steps = 100 if shape == 'tiny' else 10
    res = {}
    for name, model in (('fp32 weights', m32), ('bf16 linear weights', lin_bf16(b.build_tower(shape, dev)))):
        model.requires_grad_(False)
        t = time.perf_counter()
        r = optimize(lambda x, model=model: encode_pseudo_tokens(model, x), tg, token_width=width, seeds=list(range(8)),
                     settings=OviSettings(steps=steps), device=dev, dtype=torch.bfloat16)
        res[name] = (time.perf_counter() - t, sum(r.text_cosine)/8)
    print(shape, res)
