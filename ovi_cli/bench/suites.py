"""A benchmark's prompts for one run: which categories, whose prompt files, how many prompts.

Pure but for reading prompt files; every prompt is checked against the official layout
(`layout.check_prompt`) here, before any model loads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovi_cli.api import Benchmark
from ovi_cli.bench.layout import check_prompt
from ovi_cli.checks import STDIN
from ovi_cli.errors import OviError
from ovi_cli.plugins import Registry, get_registry
from ovi_cli.prompts import read_prompt_file


@dataclass(frozen=True)
class CategoryPrompts:
    """One category's prompt list (all of it, file order) and how much of it this run takes."""

    name: str
    prompts: tuple[str, ...]
    source: str
    limit: int | None = None

    @property
    def selected(self) -> tuple[str, ...]:
        """The prompts this run generates: the first `limit` (all without a limit)."""
        return self.prompts if self.limit is None else self.prompts[: self.limit]

    @property
    def sha256(self) -> str:
        return prompt_list_hash(self.prompts)

    def record(self) -> dict:
        """This category's entry in `bench.json` (the limit is not recorded: a later run may extend it)."""
        return {"source": self.source, "prompts": len(self.prompts), "sha256": self.sha256}


def prompt_list_hash(prompts: Sequence[str]) -> str:
    """sha256 of the prompts joined by newlines (independent of the file's line endings and comments)."""
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()


def get_benchmark(name: str, registry: Registry | None = None) -> Benchmark:
    return (registry or get_registry()).get("benchmark", name)()


def parse_categories(text: str | None, known: Sequence[str], benchmark: str) -> list[str]:
    """`--categories color,shape` -> the names, in the benchmark's order; None -> all of them."""
    if text is None:
        return list(known)
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise OviError("--categories is empty: name one or more categories, separated by commas")
    unknown = [c for c in names if c not in known]
    if unknown:
        raise OviError(f"benchmark {benchmark!r} has no category {', '.join(map(repr, unknown))} "
                       f"(its categories: {', '.join(known)})")
    return [c for c in known if c in names]


def parse_prompt_files(items: Sequence[str] | None, known: Sequence[str], benchmark: str) -> dict[str, Path]:
    """`--prompt-file CATEGORY=FILE` items -> {category: file}; the file must exist (`-`: standard input,
    for one category)."""
    out: dict[str, Path] = {}
    for item in items or []:
        category, sep, path = item.partition("=")
        category = category.strip()
        if not sep or not category or not path.strip():
            raise OviError(f"malformed --prompt-file {item!r}: expected CATEGORY=FILE, e.g. color=my_colors.txt")
        if category not in known:
            raise OviError(f"--prompt-file {item!r}: benchmark {benchmark!r} has no category {category!r} "
                           f"(its categories: {', '.join(known)})")
        if category in out:
            raise OviError(f"--prompt-file names category {category!r} twice")
        file = Path(path.strip()).expanduser()
        if str(file) == STDIN:
            if any(str(f) == STDIN for f in out.values()):
                raise OviError("--prompt-file: only one category can read standard input (-)")
        elif not file.is_file():
            raise OviError(f"--prompt-file {item!r}: {str(file)!r} is not a file")
        out[category] = file
    return out


def load_suite(
    benchmark: Benchmark,
    categories: Sequence[str],
    prompt_files: dict[str, Path] | None = None,
    limit: int | None = None,
) -> list[CategoryPrompts]:
    """The prompts of each category (a user's file where given), every selected prompt checked."""
    if limit is not None and limit < 1:
        raise OviError("--limit must be >= 1")
    out = []
    for cat in categories:
        file = (prompt_files or {}).get(cat)
        if file is not None:
            prompts = read_prompt_file(file)
            source = "<standard input>" if str(file) == STDIN else str(file.absolute())
        else:
            prompts, source = [p.strip() for p in benchmark.prompts(cat)], benchmark.source(cat)
        if not prompts:
            raise OviError(f"category {cat!r} of benchmark {benchmark.name!r} has no prompts ({source})")
        suite = CategoryPrompts(cat, tuple(prompts), source, limit)
        for i, p in enumerate(suite.selected):
            check_prompt(p, f"{cat} prompt {i + 1}, {source}")
        out.append(suite)
    return out
