"""One OVI per image vs one OVI per prompt, on two finished toy benchmark runs.

    ovi bench generate toy --model toy --out IMG --batch 10
    ovi bench generate toy --model toy --out PRM --ovi-per prompt --batch 10
    python benchmarks/bench_ovi_per.py IMG PRM

Per category and run: the embeddings' text cosine (from the records), the toy oracle's object
accuracy and exact match (`ovi_plugins.toy.oracle.judge`, CLIP-free) averaged over every image,
the spread of the oracle over the K images of a prompt, and how many of a prompt's K images are
distinct. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ovi_cli.bench import layout
from ovi_cli.bench.runlog import read_records
from ovi_plugins.toy.dataset import parse_prompt
from ovi_plugins.toy.oracle import judge


def summarise(run: Path, category: str) -> dict:
    records = read_records(run, category)
    by_prompt: dict[int, list[tuple[float, float, float, bytes]]] = {}
    for rec in records.values():
        path = run / category / rec["file"]
        image = Image.open(path).convert("RGB")
        j = judge(image, parse_prompt(rec["prompt"]))
        by_prompt.setdefault(rec["prompt_index"], []).append(
            (rec["text_cosine"], j.object_accuracy, float(j.exact), path.read_bytes()))
    cos = [c for rows in by_prompt.values() for c, *_ in rows]
    acc = [a for rows in by_prompt.values() for _, a, _, _ in rows]
    exact = [e for rows in by_prompt.values() for _, _, e, _ in rows]
    spread = [float(np.std([a for _, a, _, _ in rows])) for rows in by_prompt.values()]
    distinct = [len({b for *_, b in rows}) for rows in by_prompt.values()]
    per_prompt_acc = {i: float(np.mean([a for _, a, _, _ in rows])) for i, rows in by_prompt.items()}
    return {"images": len(records), "prompts": len(by_prompt), "text_cosine": float(np.mean(cos)),
            "oracle_acc": float(np.mean(acc)), "oracle_exact": float(np.mean(exact)),
            "within_prompt_std": float(np.mean(spread)), "distinct_per_prompt": float(np.mean(distinct)),
            "per_prompt_acc": per_prompt_acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("per_image", type=Path)
    ap.add_argument("per_prompt", type=Path)
    args = ap.parse_args()
    bench = json.loads(layout.bench_json_path(args.per_image).read_text())
    print("| category | mode | images | text cosine | oracle object acc | oracle exact | "
          "oracle std within a prompt | distinct images per prompt |")
    print("|---|---|---|---|---|---|---|---|")
    for category in bench["categories"]:
        rows = {}
        for mode, run in (("per image", args.per_image), ("per prompt", args.per_prompt)):
            s = rows[mode] = summarise(run, category)
            print(f"| {category} | {mode} | {s['images']} | {s['text_cosine']:.4f} | {s['oracle_acc']:.3f} | "
                  f"{s['oracle_exact']:.3f} | {s['within_prompt_std']:.3f} | {s['distinct_per_prompt']:.1f} |")
        a, b = rows["per image"]["per_prompt_acc"], rows["per prompt"]["per_prompt_acc"]
        diff = [abs(a[i] - b[i]) for i in a]
        print(f"| {category} | per-prompt score difference | | | mean abs {np.mean(diff):.3f}, "
              f"max {np.max(diff):.3f} | | | |")


if __name__ == "__main__":
    main()
