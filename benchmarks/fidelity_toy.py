"""The paper's argument on the toy world: composition (oracle) beside fidelity (FD, precision/recall).

    python benchmarks/fidelity_toy.py EVAL_OUT REFERENCE_DIR [--seeds 0,1,2]

EVAL_OUT is an `ovi eval toy --out EVAL_OUT` folder (one bench run per method, scored with the
oracle); REFERENCE_DIR a folder of real toy images not used in training, e.g.
`ovi toy dataset REF --n 1000 --heldout 0 --seed 5`. Prints:

1. the toy CLIP's modality gap (Liang et al. 2022): cosine of the mean L2-normalised text embedding
   of the reference captions to the mean image embedding, and how far TextEmb's embeddings (the text
   embeddings themselves, fed as image embeddings) sit from the real-image cloud compared with the
   trained toy prior's embeddings of the same captions: FD in the CLIP space, embeddings against real
   image embeddings (before any decoding);
2. `ovi bench fidelity` of every run against REFERENCE_DIR in the toy CLIP space (FD with its
   bootstrap interval, over several bootstrap seeds; precision and recall), beside the oracle score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def modality_gap(reference: Path, encoder: str, limit: int = 500) -> dict[str, float]:
    from ovi_cli.encoders import Encoders
    from ovi_plugins.fidelity.maths import frechet_distance, mean_cov
    from ovi_plugins.fidelity.maths import modality_gap as gap
    from ovi_stats.images import load_rgb

    rows = [json.loads(line) for line in (reference / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[:limit]
    enc = Encoders.load(encoder, device="cpu")
    captions = [r.get("text") or r.get("caption") for r in rows]
    files = [reference / r["file"] for r in rows]
    img = np.concatenate([enc.encode_images([load_rgb(f) for f in files[i:i + 64]]).numpy()
                          for i in range(0, len(files), 64)])
    txt = np.concatenate([enc.encode_text(captions[i:i + 64]).text_embeds.numpy()
                          for i in range(0, len(captions), 64)])
    out = gap(txt, img)
    mu_i, cov_i = mean_cov(img)
    out["fd_text_embeds_vs_image_embeds"] = frechet_distance(*mean_cov(txt), mu_i, cov_i)
    half = len(img) // 2
    out["fd_image_half_vs_half"] = frechet_distance(*mean_cov(img[:half]), *mean_cov(img[half:]))
    out["n"] = len(img)
    # the trained toy prior's embeddings of the same captions, against the same real image embeddings
    import torch

    from ovi_cli.api import PluginContext, PriorJob
    from ovi_plugins.toy.plugin import ToyPrior

    prior = ToyPrior(PluginContext(name="toy-prior", device=torch.device("cpu")))
    emb = []
    for i in range(0, len(captions), 64):
        batch = captions[i:i + 64]
        job = PriorJob(prompts=batch, text=enc.encode_text(batch), encoders=enc, seeds=list(range(len(batch))))
        emb.append(prior.embed(job).image_embeds.float().numpy())
    pri = np.concatenate(emb)
    out["fd_toy_prior_embeds_vs_image_embeds"] = frechet_distance(*mean_cov(pri), mu_i, cov_i)
    out["cosine_of_means_toy_prior_vs_image"] = gap(pri, img)["cosine_of_means"]
    out["mean_norm_text"] = float(np.linalg.norm(txt, axis=1).mean())
    out["mean_norm_image"] = float(np.linalg.norm(img, axis=1).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_out", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--seeds", default="0,1,2", help="bootstrap seeds of the FD interval")
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    from ovi_cli.bench.fidelity import ALL, FidelityRequest, bench_fidelity
    from ovi_cli.bench.table import build_table, compositional_mean, load_run
    from ovi_plugins.toy.preset import toy_paths

    encoder = str(toy_paths()["encoder"])
    print("modality gap of the toy CLIP:", json.dumps(modality_gap(args.reference, encoder), indent=1))
    runs = sorted(p.parent for p in args.eval_out.glob("*/scores.json"))
    seeds = [int(s) for s in args.seeds.split(",")]
    table = {}
    for seed in seeds:
        req = FidelityRequest(reference=str(args.reference / "train"), encoder_model=encoder, metrics=["fd", "prdc"],
                              options={"fd": {"seed": seed}}, cache=args.cache, per_category=False)
        for run, doc in zip(runs, bench_fidelity(runs, req)):
            table.setdefault(run, []).append(doc["spaces"]["clip"][ALL])
    tab = build_table([load_run(r) for r in runs])
    print("| run | oracle (mean) | FD clip [95% interval, per bootstrap seed] | precision | recall | n | n_ref |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for row, run in zip(tab.rows, runs):
        vals = table[run]
        fd = vals[0]["fd"]
        ivs = "; ".join(f"[{v['fd']['low']:.2f}, {v['fd']['high']:.2f}]" for v in vals)
        print(f"| {row.name} | {compositional_mean(row, tab):.3f} | {fd['value']:.2f} {ivs} | "
              f"{vals[0]['precision']['value']:.3f} | {vals[0]['recall']['value']:.3f} | {fd['n']} | {fd['n_ref']} |")


if __name__ == "__main__":
    main()
