"""Per-step cost of the built-in constraints (term + backward) at Kandinsky 2.2's width, on CPU.

    .venv/bin/python benchmarks/constraint_overhead.py [--dim 1280] [--count 10000] [--batch 1]

Builds a throw-away store of random vectors (flat index) and times `term(e) + backward` per call
for `mahalanobis` and `nn` (k = 1 and 8; every step), plus the faiss search alone. No model is
needed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ovi_cli.api import ConstraintContext
from ovi_plugins.constraints import MahalanobisConstraint, NearestNeighborConstraint
from ovi_stats.store import write_store


class _Enc:  # what the constraints read from the encoders: the width
    def __init__(self, dim: int) -> None:
        self.embed_dim = dim


def _time(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store = write_store(Path(tmp) / "bench", rng.normal(size=(args.count, args.dim)).astype(np.float32),
                            [f"{i}.jpg" for i in range(args.count)], encoder={"source": "random", "fingerprint": "0"},
                            index="flat")
        print(f"store: {args.count} x {args.dim}, written in {time.perf_counter() - t:.1f}s; "
              f"torch threads {torch.get_num_threads()}")
        e = torch.randn(args.batch, args.dim, requires_grad=True)
        rows = torch.arange(args.batch)

        def ctx(weight, **options):
            return ConstraintContext(encoders=_Enc(args.dim), device=torch.device("cpu"), dtype=torch.float32,
                                     store=store, options=options, weight=weight)

        cases = {
            "mahalanobis": MahalanobisConstraint(ctx(0.009)),
            "nn k=1": NearestNeighborConstraint(ctx(0.5, k=1, every=1)),
            "nn k=8": NearestNeighborConstraint(ctx(0.5, k=8, every=1)),
        }
        for name, c in cases.items():
            def step(c=c):
                e.grad = None
                c.term(e, 0, rows).sum().backward()
            print(f"{name:12s} term+backward: {_time(step, args.repeat):8.3f} ms per step (batch {args.batch})")
        q = np.random.default_rng(1).normal(size=(args.batch, args.dim)).astype(np.float32)
        print(f"{'faiss search':12s} k=1 alone:    {_time(lambda: store.search(q, 1), args.repeat):8.3f} ms")


if __name__ == "__main__":
    main()
