"""`ovi --help` and `ovi --version` start without the heavy libraries (issue 10, item 2).

Each runs in a fresh interpreter through the real entry point, every plugin registered; then
`sys.modules` is inspected. `benchmarks/startup.py` measures the time against `import torch`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "diffusers", "numpy", "faiss", "matplotlib", "PIL", "safetensors")
PROBE = f"HEAVY = {HEAVY!r}\n" + """
import json, sys
from ovi_cli.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
from ovi_cli.plugins import get_registry
print(json.dumps({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules),
                  "plugins": sorted(get_registry().names("decoder")), "failures": len(get_registry().failures)}))
"""


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["gen", "--help"], ["compare", "--help"],
                                  ["toy", "train", "--help"]])
def test_help_and_version_import_no_heavy_library(args):
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["code"] in (0, None)
    assert data["heavy"] == []
    # the plugins did register (their heavy modules load only when used)
    assert {"embeds", "kandinsky22", "toy"} <= set(data["plugins"]) and data["failures"] == 0
