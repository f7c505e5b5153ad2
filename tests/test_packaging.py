"""The wheel a user installs holds every module and data file of the three packages.

`pyproject.toml` lists the packages and the data globs explicitly, so a new subpackage or data
folder that is not listed would work from this checkout (editable install) and be missing from a
wheel. Built without isolation from the setuptools of this venv (nothing is downloaded).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"ovi_cli": REPO / "ovi_cli", "ovi_plugins": REPO / "plugins", "ovi_stats": REPO / "stats"}
DATA = ["ovi_cli/bench/data/t2i-compbench", "ovi_plugins/scorers/data", "ovi_plugins/toy/models"]


def _tracked(folder: Path) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", "--", str(folder)], cwd=REPO, capture_output=True, check=True)
    return [REPO / p for p in out.stdout.decode().split("\0") if p]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[set[str], str]:
    pytest.importorskip("setuptools")
    if not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (the list of tracked files)")
    # from a copy of the tracked files: a build in the checkout would reuse a stale build/ folder
    src = tmp_path_factory.mktemp("src")
    for path in _tracked(REPO):
        if path.is_file():
            (src / path.relative_to(REPO)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / path.relative_to(REPO))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (path,) = out.glob("ovi-*.whl")
    return set(zipfile.ZipFile(path).namelist()), res.stderr


def _wheel_name(path: Path) -> str:
    for name, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            return f"{name}/{path.relative_to(folder).as_posix()}"
    raise AssertionError(path)


def test_every_tracked_module_is_in_the_wheel(wheel):
    names, _ = wheel
    modules = [p for folder in PACKAGES.values() for p in _tracked(folder) if p.suffix == ".py"]
    assert len(modules) > 50
    missing = [_wheel_name(p) for p in modules if _wheel_name(p) not in names]
    assert not missing, f"add their packages to [tool.setuptools] packages: {missing}"


def test_every_data_file_is_in_the_wheel(wheel):
    names, _ = wheel
    files = [p for folder in PACKAGES.values() for p in _tracked(folder)
             if any(_wheel_name(p).startswith(d + "/") for d in DATA)]
    assert any(f.name == "color_val.txt" for f in files) and any(f.name == "model.safetensors" for f in files)
    missing = [_wheel_name(p) for p in files if _wheel_name(p) not in names]
    assert not missing, f"add them to [tool.setuptools.package-data]: {missing}"


def test_the_build_raises_no_packaging_warning(wheel):
    _, stderr = wheel
    assert "absent from the `packages` configuration" not in stderr
