"""How fast `ovi --help` and `ovi --version` start, against `python -c "import torch"`, in one run.

    python benchmarks/startup.py              # 7 rounds
    python benchmarks/startup.py --rounds 15

Each command runs in a fresh process, the commands interleaved round by round (so a busy machine
slows them alike); the table gives the median and the fastest wall-clock time of each, and the
last line is JSON with the ratios `ovi_help_over_import_torch` and `ovi_version_over_import_torch`
(medians). `python -c pass` is the interpreter's own start, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def ovi_executable() -> list[str]:
    """The `ovi` console script beside this interpreter (a venv's), else `python -m ovi_cli`."""
    script = Path(sys.executable).parent / "ovi"
    if script.exists():
        return [str(script)]
    found = shutil.which("ovi")
    return [found] if found else [sys.executable, "-m", "ovi_cli"]


def commands() -> dict[str, list[str]]:
    ovi = ovi_executable()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "ovi --help": [*ovi, "--help"],
        "ovi --version": [*ovi, "--version"],
    }


def time_once(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "100"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cmds = commands()
    for cmd in cmds.values():  # warm the file cache once
        time_once(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(args.rounds):
        for name, cmd in cmds.items():
            times[name].append(time_once(cmd))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    torch_s = med['python -c "import torch"']
    print(f"{'command':<28} {'median s':>9} {'fastest s':>10} {'/ import torch':>15}")
    for name, ts in times.items():
        print(f"{name:<28} {med[name]:>9.3f} {min(ts):>10.3f} {med[name] / torch_s:>15.2f}")
    print(json.dumps({
        "rounds": args.rounds,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "ovi_help_over_import_torch": round(med["ovi --help"] / torch_s, 3),
        "ovi_version_over_import_torch": round(med["ovi --version"] / torch_s, 3),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
