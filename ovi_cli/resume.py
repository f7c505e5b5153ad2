"""Resuming into an output that already holds results: which settings differ from the new run's.

The one resume policy (pure: it imports only `ovi_cli.errors`, so every layer may use it): what a
run recorded, what differs (named), and refuse / skip / redo (`--overwrite`). `ovi gen --prompts`,
`ovi bench generate` and `ovi bench score` use it; `check_resume` is the function a long run calls
with what it recorded and what it is asked now. Results made with other settings are never
silently mixed with new ones; the refusal names what differs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ovi_cli.errors import OviError

# Settings that only say where a run executes: each process of a multi-GPU run has its own device.
EXECUTION_ONLY = frozenset({"device"})
MISSING = "<unset>"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):  # an empty mapping adds nothing: {} and a missing key are the same
        for key in value:
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def flatten_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`{"options": {"nn": {"k": 3}}}` -> `{"options.nn.k": 3}` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    _flatten(settings, "", out)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)  # 1 and 1.0 are the same setting (JSON does not keep the type)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def settings_differences(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    ignore: Collection[str] = EXECUTION_ONLY,
    only_shared: bool = False,
) -> list[tuple[str, Any, Any]]:
    """`(name, old value, new value)` for each setting that differs, sorted by name.

    Nested mappings are compared key by key (`options.nn.k`). A key missing on one side differs
    (shown as `<unset>`) unless `only_shared` (results written by an older version that did not
    record the setting). Top-level names in `ignore` are skipped.
    """
    a, b = flatten_settings(old), flatten_settings(new)
    keys = (a.keys() & b.keys()) if only_shared else (a.keys() | b.keys())
    out = []
    for key in sorted(keys):
        if key.split(".", 1)[0] in ignore:
            continue
        va, vb = a.get(key, MISSING), b.get(key, MISSING)
        if not _same(va, vb):
            out.append((key, va, vb))
    return out


def _short(value: Any, limit: int = 40) -> str:
    text = value if value == MISSING else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_differences(diffs: list[tuple[str, Any, Any]], most: int = 6, sep: str = " ") -> str:
    """`steps 500 -> 300, constraints [] -> ['nn']` (the first `most`, then how many more)."""
    parts = [f"{name}{sep}{_short(a)} -> {_short(b)}" for name, a, b in diffs[:most]]
    if len(diffs) > most:
        parts.append(f"and {len(diffs) - most} more")
    return ", ".join(parts)


def refuse_if_different(
    old: Mapping[str, Any], new: Mapping[str, Any], what: str, advice: str, **kwargs: Any
) -> None:
    """A one-line `OviError` naming the differing settings, e.g. when resuming into `what`."""
    check_resume(old, new, what, advice, **kwargs)


def check_resume(
    recorded: Mapping[str, Any] | None,
    asked: Mapping[str, Any],
    what: str,
    advice: str,
    *,
    ignore: Collection[str] = EXECUTION_ONLY,
    only_shared: bool = False,
    extra: list[tuple[str, Any, Any]] | None = None,
    sep: str = " ",
    verb: str = "was",
    unrecorded_ok: bool = False,
) -> None:
    """THE resume check: what a run recorded against what is asked now; a one-line `OviError`
    (`WHAT was made with other settings (NAME OLD -> NEW, ...); ADVICE`) when anything differs.

    `recorded` None: nothing was recorded yet (a new run), nothing to compare. `extra`: differences
    found outside the two mappings (e.g. prompt lists by hash), named in the same line.
    `unrecorded_ok`: a setting the run did not record at all (a top-level name added by a later
    version, e.g. `encoder_family`) is not compared.
    Used by `ovi gen --prompts`, `ovi bench generate` and `ovi bench score`; pure, so the stats
    layer can use it for build-stats resumes too.
    """
    if recorded is not None and unrecorded_ok:
        asked = recorded_keys(recorded, asked)
    diffs = [] if recorded is None else settings_differences(recorded, asked, ignore=ignore, only_shared=only_shared)
    diffs = sorted(diffs + list(extra or []))
    if diffs:
        raise OviError(f"{what} {verb} made with other settings ({describe_differences(diffs, sep=sep)}); {advice}")


def recorded_keys(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> dict[str, Any]:
    """`asked` without the top-level settings `recorded` does not hold (added by a later version)."""
    return {k: v for k, v in asked.items() if k in recorded}


# what to do with one finished result when a run resumes
NEW, SKIP, REDO, CLASH = "new", "skip", "redo", "clash"


def resume_action(
    recorded: Mapping[str, Any] | None,
    asked: Mapping[str, Any],
    *,
    overwrite: bool = False,
    ignore: Collection[str] = EXECUTION_ONLY,
    only_shared: bool = False,
    unrecorded_ok: bool = False,
) -> tuple[str, list[tuple[str, Any, Any]]]:
    """The one policy for a result that may exist: `(action, differences)`.

    `new` (nothing recorded: make it), `redo` (`overwrite`: make it again), `skip` (made with the
    same settings), `clash` (made with other settings: the caller refuses, naming `differences`).
    """
    if recorded is None:
        return NEW, []
    if overwrite:
        return REDO, []
    if unrecorded_ok:
        asked = recorded_keys(recorded, asked)
    diffs = settings_differences(recorded, asked, ignore=ignore, only_shared=only_shared)
    return (CLASH, diffs) if diffs else (SKIP, [])


def refuse_clashes(clashes: list[tuple[str, list[tuple[str, Any, Any]]]], what: str, advice: str) -> None:
    """One line for every `clash` of a run: how many, where, the first one's differences and name."""
    if clashes:
        name, diffs = clashes[0]
        raise OviError(f"{len(clashes)} {what} were made with other settings ({describe_differences(diffs)}; "
                       f"e.g. {name}); {advice}")
