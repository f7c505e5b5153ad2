"""Resuming into an output that already holds results: which settings differ from the new run's.

One pure helper for every command that resumes (`ovi gen --prompts`, `ovi bench generate`): results
made with other settings are never silently mixed with new ones; the refusal names what differs.
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


def describe_differences(diffs: list[tuple[str, Any, Any]], most: int = 6) -> str:
    """`steps 500 -> 300, constraints [] -> ['nn']` (the first `most`, then how many more)."""
    parts = [f"{name} {_short(a)} -> {_short(b)}" for name, a, b in diffs[:most]]
    if len(diffs) > most:
        parts.append(f"and {len(diffs) - most} more")
    return ", ".join(parts)


def refuse_if_different(
    old: Mapping[str, Any], new: Mapping[str, Any], what: str, advice: str, **kwargs: Any
) -> None:
    """A one-line `OviError` naming the differing settings, e.g. when resuming into `what`."""
    diffs = settings_differences(old, new, **kwargs)
    if diffs:
        raise OviError(f"{what} was made with other settings ({describe_differences(diffs)}); {advice}")
