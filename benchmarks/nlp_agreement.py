"""How often ovi's rule-based noun-phrase parser gives what spaCy's en_core_web_sm gives on the
T2I-CompBench validation prompts, for each use the scorers make of it (docs/benchmark.md).

Two steps, so spaCy need not be installed beside ovi:
    python benchmarks/nlp_agreement.py dump PROMPTS_DIR spacy.json [--model en_core_web_sm]   # where spaCy is
    python benchmarks/nlp_agreement.py compare spacy.json                                     # in ovi's venv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CATEGORIES = ("color", "shape", "texture", "spatial", "complex", "non_spatial", "numeracy", "3d_spatial")


def dump(prompts_dir: Path, out: Path, model: str) -> None:
    import spacy

    nlp = spacy.load(model)
    data: dict[str, dict] = {}
    for cat in CATEGORIES:
        for p in (prompts_dir / f"{cat}_val.txt").read_text().splitlines():
            if p.strip():
                d = nlp(p.strip())
                data.setdefault(cat, {})[p.strip()] = {"chunks": [c.text for c in d.noun_chunks],
                                                       "tokens": [[t.text, t.pos_] for t in d]}
    out.write_text(json.dumps({"spacy": spacy.__version__, "model": nlp.meta["version"], "data": data}))


def compare(path: Path) -> None:
    from ovi_plugins.scorers import rules
    from ovi_plugins.scorers.nlp import RuleParser

    doc = json.loads(path.read_text())
    data, p = doc["data"], RuleParser()
    print(f"spaCy {doc['spacy']}, model {doc['model']} vs ovi {p.name}")

    def report(what: str, cat: str, same) -> None:
        n = len(data[cat])
        ok = sum(1 for prompt, sp in data[cat].items() if same(prompt, sp))
        print(f"{what}: {ok}/{n} ({100 * ok / n:.1f}%)")

    def toks(prompt):
        return [(t.text, t.pos) for t in p.tokens(prompt)]

    for cat in ("color", "shape", "texture", "complex"):
        report(f"blip-vqa questions, {cat}", cat,
               lambda q, sp: rules.blip_questions(p.noun_chunks(q)) == rules.blip_questions(sp["chunks"]))
    report("detector objects, spatial", "spatial",
           lambda q, sp: rules.spatial_objects(toks(q)) == rules.spatial_objects([tuple(t) for t in sp["tokens"]]))
    report("detector objects, complex", "complex", lambda q, sp: rules.complex_spatial_objects(toks(q)) ==
           rules.complex_spatial_objects([tuple(t) for t in sp["tokens"]]))
    report("clip-score text, complex", "complex", lambda q, sp: " ".join(t for t, pos in toks(q) if pos != "ADJ")
           == " ".join(t for t, pos in sp["tokens"] if pos != "ADJ"))
    report("detector counts, numeracy", "numeracy", lambda q, sp: rules.numeracy_targets([t for t, _ in toks(q)])
           == rules.numeracy_targets([t for t, _ in sp["tokens"]]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("prompts_dir", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--model", default="en_core_web_sm")
    c = sub.add_parser("compare")
    c.add_argument("dump", type=Path)
    a = ap.parse_args()
    dump(a.prompts_dir, a.out, a.model) if a.cmd == "dump" else compare(a.dump)
