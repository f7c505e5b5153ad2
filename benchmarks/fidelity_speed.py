"""How fast `ovi bench fidelity` is, and what share of it feature extraction takes (toy world, CPU or GPU).

    python benchmarks/fidelity_speed.py [--run 1000] [--reference 5000] [--out DIR]

Makes a toy benchmark run of RUN real renders and a reference folder of REFERENCE toy images, then
times, in one process: (1) a cold `ovi bench fidelity` (every image encoded: extraction batched,
once per image), (2) a warm rerun (features from the cache: no image encoded), (3) the same run
against the toy statistics store (its stored moments and embeddings: no reference image encoded).
Prints images/s of feature extraction and its share of the cold run. Ratios within one run only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


class Timer:
    def __init__(self) -> None:
        from ovi_cli.api import Reporter

        outer = self

        class R(Reporter):
            def start(self, label: str, total: int | None) -> None:
                outer.t0, outer.n = time.perf_counter(), 0

            def advance(self, done: int = 1, info: str = "") -> None:
                outer.n += done
                outer.t1 = time.perf_counter()

        self.reporter = R()
        self.t0 = self.t1 = 0.0
        self.n = 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=int, default=1000)
    ap.add_argument("--reference", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import numpy as np

    from ovi_cli.bench import layout
    from ovi_cli.bench.fidelity import FidelityRequest, bench_fidelity
    from ovi_cli.outputs import atomic_write_json
    from ovi_plugins.toy.dataset import render, sample_scene
    from ovi_plugins.toy.preset import toy_paths

    out = args.out or Path(tempfile.mkdtemp(prefix="ovi-fid-speed-"))
    run, ref = out / "run", out / "ref"
    rng = np.random.default_rng(0)
    for i in range(args.run):
        p = layout.sample_path(run, "single", "a toy scene", i)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            render(sample_scene(rng)).save(p)
    atomic_write_json(layout.bench_json_path(run), {"benchmark": "toy", "settings": {"prior": "real"}})
    ref.mkdir(parents=True, exist_ok=True)
    for i in range(args.reference):
        p = ref / f"{i:06d}.png"
        if not p.exists():
            render(sample_scene(rng)).save(p)
    encoder = str(toy_paths()["encoder"])
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    req = FidelityRequest(reference=str(ref), encoder_model=encoder, cache=cache, device=args.device,
                          per_category=False, batch_size=64)
    timer = Timer()
    t = time.perf_counter()
    bench_fidelity([run], req, reporter=timer.reporter)
    cold = time.perf_counter() - t
    extract = timer.t1 - timer.t0
    t = time.perf_counter()
    bench_fidelity([run], req)
    warm = time.perf_counter() - t
    shutil.rmtree(cache, ignore_errors=True)
    store_req = FidelityRequest(reference=str(toy_paths()["stats"]), encoder_model=encoder, cache=cache,
                                device=args.device, per_category=False, batch_size=64, metrics=["fd", "kid"])
    timer2 = Timer()
    t = time.perf_counter()
    bench_fidelity([run], store_req, reporter=timer2.reporter)
    store = time.perf_counter() - t
    print(f"run {args.run} images, reference {args.reference} images (folder)")
    print(f"cold: {cold:.1f} s; feature extraction {timer.n} images in {extract:.1f} s = {timer.n / extract:.0f} "
          f"images/s, {100 * extract / cold:.0f}% of the cold run")
    print(f"warm rerun (all features cached): {warm:.1f} s = {warm / cold:.2f} of the cold run")
    print(f"against the toy store (10,000 stored embeddings, fd+kid): {store:.1f} s, images encoded: {timer2.n} "
          f"(the run's only)")


if __name__ == "__main__":
    main()
