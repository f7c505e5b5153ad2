"""Prompts: one validation for every command and the library, and prompt files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ovi_cli.errors import OviError


def validate_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompts, stripped; an empty one (or none at all) is a one-line `OviError`."""
    out = []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise OviError("empty prompt: give some text to generate from")
        out.append(p.strip())
    if not out:
        raise OviError("no prompt given")
    return out


def read_prompt_file(path: Path | str) -> list[str]:
    """One prompt per line (UTF-8, a byte-order mark is dropped); blank lines and `#` lines skipped.

    `-` reads standard input; only a regular file or `-`, at most `checks.MAX_TEXT_INPUT` bytes."""
    from ovi_cli.checks import read_input_bytes

    path = Path(path)
    try:
        lines = read_input_bytes(path, "prompt file").decode("utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise OviError(f"cannot read prompt file {str(path)!r}: {exc.__class__.__name__}") from exc
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise OviError(f"prompt file {str(path)!r} holds no prompt")
    return prompts


def prompts_from(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompts of a command that takes a PROMPT or `--prompts FILE` (exactly one of them)."""
    if prompt is None and prompts_file is None:
        raise OviError("give a PROMPT (in quotes) or --prompts FILE with one prompt per line")
    if prompt is not None and prompts_file is not None:
        raise OviError("give a PROMPT or --prompts FILE, not both")
    if prompt is not None:
        return validate_prompts([prompt])
    assert prompts_file is not None
    return read_prompt_file(prompts_file)
