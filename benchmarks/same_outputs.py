"""Same flags, same bytes: run a fixed set of toy gen / compare / bench commands and hash what they write.

    python benchmarks/same_outputs.py record REF.json     # on the code before a change
    python benchmarks/same_outputs.py check REF.json      # on the code after it: exit 1 on any difference

Hashes every image (.png pixels, not the PNG container: metadata chunks may change) and every tensor
and metadata entry of the .safetensors files the commands write (their tensors' bytes, sorted by name,
not the file's bytes: safetensors writes its metadata map in a random order, so two identical runs can
give two files). Sidecars are left out (they hold timings). Offline (`--model toy`),
about a minute on a 2-core CPU. The refactors of the house issue were checked with it (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["a red circle", "a small blue square on the left", "a green triangle and a yellow star"]


def commands(out: Path) -> list[list[str]]:
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    toy = ["--model", "toy", "--steps", "25"]
    return [
        ["gen", "a red circle", *toy, "-o", str(out / "gen" / "one.png"), "--save-embedding", "-q"],
        ["gen", "a blue square on the left", *toy, "-c", "nn", "-o", str(out / "gen" / "nn.png"),
         "--save-embedding", "-q"],
        ["gen", "--prompts", str(prompts), *toy, "-c", "mahalanobis:0.03", "--batch", "2", "-o", str(out / "prompts"),
         "--save-embedding", "-q"],
        ["compare", "a red star and a blue square", *toy, "--priors", "textemb,ovi,ovi+nn,toy-prior",
         "--out", str(out / "compare"), "-q"],
        ["bench", "generate", "toy", *toy, "--out", str(out / "bench"), "-k", "2", "--limit", "2", "-q"],
    ]


def digest(path: Path) -> str:
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as im:
            return hashlib.sha256(im.mode.encode() + repr(im.size).encode() + im.tobytes()).hexdigest()
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="numpy") as f:
        h.update(json.dumps(f.metadata() or {}, sort_keys=True).encode())
        for key in sorted(f.keys()):
            t = f.get_tensor(key)
            h.update(f"{key}:{t.dtype}:{t.shape}".encode() + t.tobytes())
    return h.hexdigest()


def run_all() -> dict[str, str]:
    ovi = str(Path(sys.executable).with_name("ovi"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for args in commands(out):
            r = subprocess.run([ovi, *args], capture_output=True, text=True, env=env)
            if r.returncode:
                sys.exit(f"ovi {' '.join(args[:2])} failed: {r.stderr.strip()[-500:]}")
        files = sorted(p for p in out.rglob("*") if p.suffix in (".png", ".safetensors") and p.is_file())
        return {str(p.relative_to(out)): digest(p) for p in files}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    mode, ref = argv[0], Path(argv[1])
    now = run_all()
    if mode == "record":
        ref.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(now)} files -> {ref}")
        return 0
    before = json.loads(ref.read_text())
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    for k in differ:
        print(f"differs: {k} ({'missing now' if k not in now else 'new' if k not in before else 'other bytes'})")
    print(f"{len(now)} files, {len(differ)} differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
