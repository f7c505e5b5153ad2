"""Same flags, same outputs: record a few gen / compare / bench runs, then check a later version.

    python benchmarks/same_run_files.py record REF   # on the version before a change (e.g. main)
    python benchmarks/same_run_files.py check REF    # after it: every file the same, or what differs

Each run uses the shipped toy world (`--model toy`, offline, CPU, seconds). Compared: every PNG and
safetensors file byte for byte, every JSON / JSON-lines / CSV file after dropping what changes
from run to run by nature (wall-clock timings, dates, versions). `REF/manifest.json` holds the
hashes; the run folders stay under REF for a look by hand (keep REF out of git).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# what changes between two identical runs by nature (seconds, dates, package versions)
VOLATILE = {"seconds", "timings", "created", "updated", "versions", "ovi_version", "time", "prior_s",
            "decode_s", "total_s", "wall_s", "stamp"}  # stamp: a scored image's size and mtime
VOLATILE_CSV = {"s", "seconds"}
# what the change recorded on purpose (issue 22): gen's --batch among the settings, the decoder's and the
# store's content in bench.json; dropped from both sides, so everything else must be the same
INTENDED = {"settings.batch", "identity.decoder_fingerprint", "identity.stats_fingerprint"}

RUNS = {
    "gen-one": ["gen", "a red circle", "--model", "toy", "--steps", "20", "--seed", "3", "-o", "{out}/one.png",
                "--save-embedding", "--quiet"],
    "gen-prompts": ["gen", "--prompts", "{prompts}", "--model", "toy", "--steps", "15", "--batch", "2",
                    "-c", "nn", "--nn-k", "2", "-o", "{out}", "--quiet"],
    "compare": ["compare", "a blue square", "--model", "toy", "--priors", "textemb,ovi,ovi+nn,toy-prior",
                "--steps", "15", "-o", "{out}", "--quiet"],
    "bench": ["bench", "generate", "toy", "--model", "toy", "--steps", "10", "-k", "2", "--limit", "2",
              "--batch", "2", "--out", "{out}", "--quiet"],
    "bench-score": ["bench", "score", "{bench}", "--scorers", "oracle,clip-score", "--json", "--quiet"],
}
PROMPTS = "a red circle\na green triangle\na blue square\n"


def _strip(obj, where: str = ""):
    if isinstance(obj, dict):
        return {k: _strip(v, f"{where}.{k}".lstrip(".")) for k, v in obj.items()
                if k not in VOLATILE and f"{where}.{k}".lstrip(".") not in INTENDED}
    if isinstance(obj, list):
        return [_strip(v, where) for v in obj]
    return obj


def _digest(path: Path, root: Path) -> str:
    data = path.read_bytes()
    if path.suffix in (".json", ".jsonl", ".csv"):  # paths name the folder the runs were made in
        data = data.replace(str(root.absolute()).encode(), b"ROOT").replace(str(root).encode(), b"ROOT")
    if path.suffix == ".json":
        data = json.dumps(_strip(json.loads(data)), sort_keys=True).encode()
    elif path.suffix == ".jsonl":
        lines = [json.dumps(_strip(json.loads(ln)), sort_keys=True) for ln in data.decode().splitlines() if ln]
        data = "\n".join(lines).encode()
    elif path.suffix == ".csv":
        rows = [ln.split(",") for ln in data.decode().splitlines()]
        drop = {i for i, name in enumerate(rows[0] if rows else []) if name in VOLATILE_CSV}
        data = "\n".join(",".join(c for i, c in enumerate(r) if i not in drop) for r in rows).encode()
    return hashlib.sha256(data).hexdigest()


def _run(name: str, ref: Path, root: Path) -> None:
    args = [a.format(out=root / name, prompts=root / "prompts.txt", bench=root / "bench") for a in RUNS[name]]
    res = subprocess.run([sys.executable, "-m", "ovi_cli", *args], capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode != 0:
        raise SystemExit(f"{name}: exit {res.returncode}: {res.stderr.strip()[-400:]}")


def make(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts.txt").write_text(PROMPTS)
    for name in RUNS:
        _run(name, root, root)
    return digests(root)


def digests(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not re.search(r"(^|/)\.", rel) and path.suffix != ".lock":
            out[rel] = _digest(path, root)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    ref = Path(argv[1])
    if argv[0] == "record":
        manifest = make(ref / "runs")
        (ref / "manifest.json").write_text(json.dumps(manifest, indent=1))
        print(f"recorded {len(manifest)} files -> {ref / 'manifest.json'}")
        return 0
    # the reference runs are hashed again (the rules above may have changed since they were recorded)
    before = digests(ref / "runs") if (ref / "runs").is_dir() else json.loads((ref / "manifest.json").read_text())
    now_root = ref / "check"
    if now_root.exists():
        import shutil

        shutil.rmtree(now_root)
    after = make(now_root)
    missing = sorted(set(before) - set(after))
    extra = sorted(set(after) - set(before))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    for label, names in (("missing", missing), ("new", extra), ("changed", changed)):
        for n in names:
            print(f"{label}: {n}")
    same = len(before) - len(missing) - len(changed)
    print(f"{same} of {len(before)} files the same; {len(missing)} missing, {len(extra)} new, {len(changed)} changed")
    return 0 if not (missing or extra or changed) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
