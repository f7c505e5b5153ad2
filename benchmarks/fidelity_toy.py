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
2. a probe of the decoder alone (no OVI): FD of decoded real-image embeddings (reconstruction),
   decoded text embeddings (TextEmb) and decoded toy-prior embeddings against real images;
3. `ovi bench fidelity` of every run against REFERENCE_DIR in the toy CLIP space (FD with its
   bootstrap interval, over several bootstrap seeds; precision and recall), beside the oracle score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def toy_embeddings(reference: Path, encoder: str, limit: int, prior_model: Path) -> dict[str, np.ndarray]:
    """The first `limit` reference images' CLIP image embeddings, their captions' text embeddings (what
    TextEmb feeds the decoder) and the trained toy prior's embeddings of the same captions."""
    import torch

    from ovi_cli.api import PluginContext, PriorJob
    from ovi_cli.encoders import Encoders
    from ovi_plugins.toy.plugin import ToyPrior
    from ovi_stats.images import load_rgb

    rows = [json.loads(line) for line in (reference / "metadata.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[:limit]
    enc = Encoders.load(encoder, device="cpu")
    captions = [r.get("text") or r.get("caption") for r in rows]
    files = [reference / r["file"] for r in rows]
    prior = ToyPrior(PluginContext(name="toy-prior", device=torch.device("cpu"), options={"model": str(prior_model)}))
    img, txt, pri = [], [], []
    for i in range(0, len(rows), 64):
        batch = captions[i:i + 64]
        text = enc.encode_text(batch)
        img.append(enc.encode_images([load_rgb(f) for f in files[i:i + 64]]).numpy())
        txt.append(text.text_embeds.numpy())
        job = PriorJob(prompts=batch, text=text, encoders=enc, seeds=list(range(len(batch))))
        pri.append(prior.embed(job).image_embeds.float().numpy())
    return {"image": np.concatenate(img), "text": np.concatenate(txt), "toy_prior": np.concatenate(pri)}


def modality_gap(emb: dict[str, np.ndarray]) -> dict[str, float]:
    from ovi_plugins.fidelity.maths import frechet_distance, mean_cov
    from ovi_plugins.fidelity.maths import modality_gap as gap

    img, txt, pri = emb["image"], emb["text"], emb["toy_prior"]
    out = gap(txt, img)
    mu_i, cov_i = mean_cov(img)
    out["fd_text_embeds_vs_image_embeds"] = frechet_distance(*mean_cov(txt), mu_i, cov_i)
    half = len(img) // 2
    out["fd_image_half_vs_half"] = frechet_distance(*mean_cov(img[:half]), *mean_cov(img[half:]))
    out["n"] = len(img)
    out["fd_toy_prior_embeds_vs_image_embeds"] = frechet_distance(*mean_cov(pri), mu_i, cov_i)
    out["cosine_of_means_toy_prior_vs_image"] = gap(pri, img)["cosine_of_means"]
    out["mean_norm_text"] = float(np.linalg.norm(txt, axis=1).mean())
    out["mean_norm_image"] = float(np.linalg.norm(img, axis=1).mean())
    return out


def decoder_probe(emb: dict[str, np.ndarray], encoder: str, decoder: Path, seed: int = 0) -> dict[str, str]:
    """The decoder alone, no OVI: decode the first half's real image embeddings (reconstruction), their
    captions' text embeddings (TextEmb) and the toy prior's embeddings; FD in the toy CLIP space of each
    image set, and of the first half's real images, against the second half's real images (equal sizes,
    bootstrap interval of seed `seed`). If reconstruction is as far from the real images as TextEmb, the
    decoder, not the embedding, decides the fidelity."""
    import torch
    from PIL import Image

    from ovi_cli.encoders import Encoders
    from ovi_plugins.fidelity.maths import bootstrap_fd, frechet_distance, mean_cov
    from ovi_plugins.toy.nets import DECODER_FORMAT, load_net

    enc = Encoders.load(encoder, device="cpu")
    dec, _ = load_net(decoder, DECODER_FORMAT)
    half = len(emb["image"]) // 2
    mu_b, cov_b = mean_cov(emb["image"][half:])

    def fd(features: np.ndarray) -> str:
        value = frechet_distance(*mean_cov(features), mu_b, cov_b)
        iv = bootstrap_fd(features, mu_b, cov_b, seed=seed, value=value)
        return f"{value:.2f} [{iv.low:.2f}, {iv.high:.2f}]"

    out = {"real images (first half)": fd(emb["image"][:half])}
    for name, key in (("decoded: reconstruction", "image"), ("decoded: textemb", "text"),
                      ("decoded: toy-prior", "toy_prior")):
        with torch.no_grad():
            pixels = dec(torch.from_numpy(emb[key][:half])).permute(0, 2, 3, 1).numpy()
        images = [Image.fromarray(a) for a in (pixels * 255).round().astype(np.uint8)]
        feats = np.concatenate([enc.encode_images(images[i:i + 64]).numpy() for i in range(0, half, 64)])
        out[name] = fd(feats)
    out["n"] = str(half)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("eval_out", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--seeds", default="0,1,2", help="bootstrap seeds of the FD interval")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--models", type=Path, default=None,
                    help="the toy models folder EVAL_OUT was made with (`ovi eval toy --models`; default: shipped)")
    ap.add_argument("--gap-images", type=int, default=1000,
                    help="reference images for the modality gap and the decoder probe (the probe uses halves)")
    args = ap.parse_args()
    from ovi_cli.bench.fidelity import ALL, FidelityRequest, bench_fidelity
    from ovi_cli.bench.table import build_table, compositional_mean, load_run
    from ovi_plugins.toy.preset import toy_paths

    paths = toy_paths(args.models) if args.models else toy_paths()
    encoder = str(paths["encoder"])
    emb = toy_embeddings(args.reference, encoder, args.gap_images, paths["prior"])
    print("modality gap of the toy CLIP:", json.dumps(modality_gap(emb), indent=1))
    probe = decoder_probe(emb, encoder, paths["decoder"])
    print("decoder probe (FD in the toy CLIP space against the other half's real images):",
          json.dumps(probe, indent=1))
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
