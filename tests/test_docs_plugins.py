"""The plugin author's manual stays true: its entry-point table is ovi's pyproject, its inline example
code is the example packages' code, and every kind has a guide."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

from ovi_cli.plugins import HOOKS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def test_entry_point_table_lists_every_entry_point_ovi_declares():
    declared = {ep.name: ep.value for ep in entry_points(group="ovi") if ep.dist and ep.dist.metadata["Name"] == "ovi"}
    page = (DOCS / "plugins.md").read_text()
    table = page.split("<!-- entry points: start -->")[1].split("<!-- entry points: end -->")[0]
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", table, flags=re.M))
    assert rows == declared


def test_every_hook_has_a_guide_linked_from_the_index():
    page = (DOCS / "plugins.md").read_text()
    for hook in [*HOOKS.values(), "register_commands"]:
        row = next((line for line in page.splitlines() if f"`{hook}(" in line), None)
        assert row is not None, f"{hook} is not in docs/plugins.md"
        guide = re.search(r"\]\((plugins/[a-z-]+\.md)\)", row)
        assert guide and (DOCS / guide.group(1)).is_file(), row


def test_inline_example_code_is_the_example_files():
    blocks = 0
    for page in sorted((DOCS / "plugins").glob("*.md")):
        text = page.read_text()
        for m in re.finditer(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```\n", text, flags=re.S):
            blocks += 1
            assert m.group(2) == (REPO / m.group(1)).read_text(), f"{page.name}: {m.group(1)} differs from the file"
    assert blocks >= 6  # pyproject + module of the constraint, decoder and scorer packages


def test_the_image_source_guide_example_builds_a_store(tmp_path, run_cli):
    """The guide's `ListSource`, exec'd as written and registered in-process, builds a store from a .txt list."""
    import types

    import numpy as np
    from PIL import Image

    from ovi_cli.plugins import load_registry, set_registry

    page = (DOCS / "plugins" / "image-source.md").read_text()
    code = re.search(r"```python\n(from pathlib import Path\n.*?)```", page, re.S).group(1)
    module = types.ModuleType("list_source")
    exec(compile(code, "image-source.md", "exec"), module.__dict__)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "mine.txt").write_text("0.png\n2.png\n")
    set_registry(load_registry(extra=[("list", module)]))
    try:
        res = run_cli("build-stats", tmp_path / "mine.txt", "--model", "toy", "--out", tmp_path / "store",
                      "--workers", "0", "--device", "cpu", "-q", "--json")
        assert res.code == 0, res.stderr
        res = run_cli("stats", "info", tmp_path / "store", "--json")
        assert res.code == 0, res.stderr
        import json

        info = json.loads(res.stdout)
        assert info["count"] == 2 and info["source_dir"] == str(tmp_path)
    finally:
        set_registry(None)
