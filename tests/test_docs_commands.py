"""Every `ovi ...` command line in docs/*.md names a real command and only flags it has (issue 22):
read from the code blocks and the inline code of every page, checked against the CLI itself."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from ovi_cli.cli import cli_command

DOCS = Path(__file__).resolve().parents[1] / "docs"
# pages generated from the code itself (the CLI reference is checked by test_docs.py)
GENERATED = {"cli.md", "architecture.md"}


def command_lines(text: str) -> list[str]:
    """`ovi ...` lines of the code blocks, and inline `ovi ...` code spans of the prose."""
    out, fence = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
            continue
        if fence:
            m = re.match(r"\s*(?:\$ )?(ovi(?: .*)?)$", line)
            if m:
                out.append(m.group(1))
        else:
            out += re.findall(r"`(ovi(?: [^`]*)?)`", line)
    return out


def tokens(line: str) -> list[str]:
    line = re.split(r"\s+#\s", line)[0]  # a shell comment
    line = line.split(" | ")[0].split(" > ")[0]  # a pipe or a redirect ends the ovi command
    try:
        words = shlex.split(line)
    except ValueError:  # an unbalanced quote in prose ("...): plain words
        words = line.split()
    return [w.strip("[]") for w in words]


def resolve(words: list[str]) -> tuple[object, list[str], list[str]]:
    """(the command the words name, its path, the words after it); a group followed by a word that
    is none of its commands is reported by the caller."""
    cmd, path, rest = cli_command(), ["ovi"], words[1:]
    while rest and hasattr(cmd, "commands") and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        if sub is None:
            break
        cmd, path, rest = sub, [*path, rest[0]], rest[1:]
    return cmd, path, rest


def flags_of(cmd) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        names.update(getattr(p, "opts", []))
        names.update(getattr(p, "secondary_opts", []))
    return names


def problems() -> list[str]:
    bad = []
    for page in sorted(DOCS.glob("**/*.md")):
        if page.name in GENERATED:
            continue
        for line in command_lines(page.read_text(encoding="utf-8")):
            words = tokens(line)
            if not words or words[0] != "ovi":
                continue
            cmd, path, rest = resolve(words)
            where = f"{page.relative_to(DOCS)}: `{line}`"
            if hasattr(cmd, "commands") and rest and not rest[0].startswith("-") and rest[0] != "...":
                # `ovi toy dataset|train|eval`: alternatives, each must exist
                missing = [w for w in rest[0].split("|") if w not in cmd.commands]
                if missing or "|" not in rest[0]:
                    bad.append(f"{where}: {' '.join(path)} has no command {', '.join(map(repr, missing))}")
                continue
            known = flags_of(cmd)
            for word in rest:
                flag = word.split("=", 1)[0]
                if re.fullmatch(r"--[a-z][a-z0-9-]*|-[A-Za-z]", flag) and flag not in known:
                    bad.append(f"{where}: {' '.join(path)} has no flag {flag}")
    return bad


def test_docs_name_only_commands_and_flags_that_exist():
    assert problems() == []


def test_the_checker_catches_a_stale_flag_and_a_missing_command(tmp_path, monkeypatch):
    (tmp_path / "page.md").write_text("Run `ovi gen \"a cat\" --reference 500` or\n\n```bash\n"
                                      "ovi stats frobnicate S\novi eval toy --weights DIR -q  # old\n"
                                      "ovi toy dataset|train\n```\n")
    monkeypatch.setattr(f"{__name__}.DOCS", tmp_path)
    found = problems()
    assert any("ovi gen has no flag --reference" in p for p in found)
    assert any("ovi stats has no command 'frobnicate'" in p for p in found)
    assert not any("dataset" in p for p in found)
    assert any("ovi eval toy has no flag --weights" in p for p in found)
    assert not any("-q" in p.split("has no flag ")[-1] for p in found)
    assert len(found) == 3
