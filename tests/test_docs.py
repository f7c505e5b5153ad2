"""The docs stay true to the code: the generated CLI reference, the README's commands and links."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import docs_scripts

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TEST_COMMAND = "HF_HUB_OFFLINE=1 python -m pytest -q"


def test_cli_reference_is_current():
    ref = docs_scripts.load("gen_cli_reference")
    assert ref.PAGE.read_text() == ref.render(), "docs/cli.md is stale: run `python docs/gen_cli_reference.py`"


def test_cli_reference_has_every_command():
    text = (REPO / "docs" / "cli.md").read_text()
    for title in ("ovi", "ovi gen", "ovi compare", "ovi build-stats", "ovi stats merge", "ovi plugins",
                  "ovi toy train", "ovi eval toy"):
        assert f"## `{title}`\n" in text, title
    assert "<bool>" not in text


def test_readme_is_short_and_its_test_command_is_what_ci_runs():
    assert len(README.splitlines()) <= 200
    assert TEST_COMMAND in README
    ci = (REPO / ".ci" / "run").read_text()
    assert any(line.strip() == TEST_COMMAND for line in ci.splitlines())
    assert "mkdocs build --strict" in ci


def test_readme_links_point_at_files_that_exist():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into docs/"
    for target in local:
        assert (REPO / target).exists(), target


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w/.-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.M))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert pages == nav
