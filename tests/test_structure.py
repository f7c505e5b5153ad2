"""The structure rules, checked on every module's imports (parsed with `ast`, nothing imported).

The analysis is `docs/gen_architecture.py`, which also draws docs/architecture.md from it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import docs_scripts

REPO = Path(__file__).resolve().parents[1]
arch = docs_scripts.load("gen_architecture")
GRAPH = arch.scan()
TERMINAL = arch.TERMINAL  # cli, entry, __main__, console, options, commands


def _in(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _library(module: str) -> bool:
    """`ovi_cli` except the terminal layer: cli.py, entry.py, console.py, commands/, options.py, __main__."""
    return _in(module, ("ovi_cli",)) and not _in(module, TERMINAL)


def test_every_module_of_the_three_packages_is_read():
    for m in ("ovi_cli", "ovi_cli.pipeline", "ovi_cli.commands.gen", "ovi_plugins.toy.train", "ovi_stats.store"):
        assert m in GRAPH
    assert len(GRAPH) == sum(1 for folder in ("ovi_cli", "plugins", "stats") for _ in (REPO / folder).rglob("*.py"))


def test_no_import_cycles_at_module_level():
    assert arch.cycles(arch.first_party_edges(GRAPH, (arch.MODULE,))) == []


def test_no_import_cycles_even_through_imports_inside_functions():
    assert arch.cycles(arch.first_party_edges(GRAPH, (arch.MODULE, arch.FUNCTION))) == []


def test_builtin_plugins_never_import_the_terminal_layer():
    """Plugin commands get terminal services through `register_commands(cli, ui)`, not by import."""
    bad = [i for imps in GRAPH.values() for i in imps if _in(i.source, ("ovi_plugins",)) and _in(i.target, TERMINAL)]
    assert bad == []
    assert arch.RANK["plugins"] < arch.RANK["terminal"]


def test_the_library_never_imports_the_terminal_or_rich():
    bad = [i for imps in GRAPH.values() for i in imps if _library(i.source) and (
        _in(i.target, ("ovi_cli.console", "ovi_cli.commands", "ovi_cli.cli", "rich")))]
    assert bad == []


def test_the_core_never_imports_the_builtin_plugins():
    bad = [i for imps in GRAPH.values() for i in imps
           if _in(i.source, ("ovi_cli", "ovi_stats")) and _in(i.target, ("ovi_plugins",))]
    assert bad == []


def test_stats_uses_only_errors_checks_outputs_and_the_version_from_above():
    used = {i.target for m, imps in GRAPH.items() if _in(m, ("ovi_stats",)) for i in imps
            if _in(i.target, ("ovi_cli",))}
    assert used <= {"ovi_cli.errors", "ovi_cli.checks", "ovi_cli.outputs", "ovi_cli.version", "ovi_cli.reporter",
                    "ovi_cli.resume", "ovi_cli"}
    package_root = [i for imps in GRAPH.values() for i in imps if i.source.startswith("ovi_stats")
                    and i.target == "ovi_cli"]
    assert all(i.level == arch.FUNCTION and i.source == "ovi_stats.store" for i in package_root)  # __version__


def test_every_layer_imports_only_downward():
    assert arch.upward_imports(GRAPH) == []


def test_architecture_page_is_current():
    page = arch.PAGE.read_text()
    assert page == arch.updated_page(page, arch.render(GRAPH)), "run `python docs/gen_architecture.py`"


# ---- the analysis itself sees what it must --------------------------------------------------------
SOURCE = '''
from __future__ import annotations
import os
from typing import TYPE_CHECKING
from . import sibling
from .sub import thing
try:
    import rich
except ImportError:
    rich = None
if TYPE_CHECKING:
    from pkg.heavy import Model
class A:
    from pkg import sibling as s
def f():
    import torch
    if True:
        from pkg.sub.thing import x
'''


def test_levels_relative_imports_and_type_checking(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(SOURCE)
    known = {"pkg", "pkg.mod", "pkg.sibling", "pkg.sub", "pkg.sub.thing", "pkg.heavy"}
    got = {(i.target, i.level) for i in arch.imports_of("pkg.mod", path, known)}
    assert got == {
        ("os", "module"), ("typing", "module"), ("pkg.sibling", "module"), ("pkg.sub.thing", "module"),
        ("rich", "module"), ("pkg.heavy", "type"), ("torch", "function"), ("pkg.sub.thing", "function"),
    }


@pytest.mark.parametrize(("edges", "expected"), [
    ({("a", "b"), ("b", "c")}, []),
    ({("a", "b"), ("b", "a"), ("b", "c")}, [["a", "b"]]),
    ({("a", "b"), ("b", "c"), ("c", "a"), ("d", "e"), ("e", "d")}, [["a", "b", "c"], ["d", "e"]]),
])
def test_cycles_are_found(edges, expected):
    assert arch.cycles(edges) == expected


def test_an_upward_import_is_reported():
    graph = {"ovi_cli.errors": [arch.Import("ovi_cli.errors", "ovi_cli.pipeline", arch.FUNCTION, 3)],
             "ovi_cli.pipeline": [arch.Import("ovi_cli.pipeline", "ovi_plugins.toy", arch.MODULE, 9)]}
    assert [(i.source, i.target) for i in arch.upward_imports(graph)] == [
        ("ovi_cli.errors", "ovi_cli.pipeline"), ("ovi_cli.pipeline", "ovi_plugins.toy")]
