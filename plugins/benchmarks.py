"""Built-in benchmark `t2i-compbench`: the T2I-CompBench++ validation prompts (entry point `benchmarks`).

The eight `<category>_val.txt` lists of T2I-CompBench (MIT, Huang et al. 2023; LICENSE beside
them) ship in `ovi_cli/bench/data/t2i-compbench/`. Categories are named as the official scripts
name their folders. Light on import: the lists are read when a run asks for them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ovi_cli import hookimpl
from ovi_cli.api import Benchmark
from ovi_cli.prompts import read_prompt_file


def compbench_file(category: str) -> Path:
    """The shipped prompt list of `category`."""
    return Path(str(resources.files("ovi_cli.bench") / "data" / "t2i-compbench" / f"{category}_val.txt"))


class T2ICompBench(Benchmark):
    """T2I-CompBench++: attribute binding (colour, shape, texture), relations, complex, numeracy."""

    name = "t2i-compbench"
    description = "T2I-CompBench++ validation prompts: 8 categories, ~300 prompts each (MIT, shipped)"
    categories = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy", "3d_spatial")

    def prompts(self, category: str) -> list[str]:
        return read_prompt_file(compbench_file(category))

    def source(self, category: str) -> str:
        return f"t2i-compbench/{category}_val.txt (shipped)"


@hookimpl
def register_benchmarks(register):
    register(T2ICompBench)
