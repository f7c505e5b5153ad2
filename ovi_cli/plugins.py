"""The one plugin manager: built-ins and third-party plugins load by the same path.

Every plugin, ovi's own included, is an entry point in group `ovi` (see `pyproject.toml`).
A plugin that fails to import or to register is recorded by name and skipped; the rest work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

import pluggy

from ovi_cli import hookspecs
from ovi_cli.errors import OviError

GROUP = "ovi"
KINDS = ("prior", "constraint", "decoder")


@dataclass
class PluginEntry:
    name: str  # the registered class's `name`
    kind: str  # prior | constraint | decoder
    cls: type
    plugin: str  # the entry point's name
    package: str
    version: str


@dataclass
class PluginFailure:
    plugin: str
    package: str
    version: str
    error: str


@dataclass
class Registry:
    entries: dict[str, dict[str, PluginEntry]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    failures: list[PluginFailure] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None

    def get(self, kind: str, name: str) -> type:
        table = self.entries[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise OviError(f"unknown {kind} {name!r}; available: {known} (see `ovi plugins`)")
        return table[name].cls

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


def _entry_points() -> list[EntryPoint]:
    # Several installs of the same distribution (e.g. an editable one) can list an entry point
    # twice; keep the first of each (package, name, value).
    seen, out = set(), []
    for ep in entry_points(group=GROUP):
        key = (_dist_of(ep)[0], ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return out


def load_registry() -> Registry:
    """Import every `ovi` entry point, run its `register_*` hooks, and index what it registers."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    reg = Registry(manager=pm)
    for ep in _entry_points():
        package, version = _dist_of(ep)
        plugin_name = f"{package}:{ep.name}"
        try:
            module = ep.load()
            pm.register(module, name=plugin_name)
        except Exception as exc:  # a broken third-party plugin must not break ovi
            reg.failures.append(PluginFailure(ep.name, package, version, _one_line(exc)))
            continue
        for kind in KINDS:
            caller = getattr(pm.hook, f"register_{kind}s")
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                try:
                    impl.function(register=_registrar(reg, kind, ep.name, package, version))
                except Exception as exc:
                    reg.failures.append(PluginFailure(ep.name, package, version, _one_line(exc)))
    return reg


def _registrar(reg: Registry, kind: str, plugin: str, package: str, version: str):
    def register(cls: type) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} class {cls!r} has no `name`")
        if name in reg.entries[kind]:
            other = reg.entries[kind][name]
            raise ValueError(f"{kind} {name!r} is already registered by {other.package}")
        reg.entries[kind][name] = PluginEntry(name, kind, cls, plugin, package, version)

    return register


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    return load_registry()
