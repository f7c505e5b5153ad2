"""The one plugin manager: built-ins and third-party plugins load by the same path.

Every plugin, ovi's own included, is an entry point in group `ovi` (see `pyproject.toml`).
ovi's own entry points load first, so a built-in name always wins; a third-party class that
reuses a registered name is refused and reported with both packages. A plugin that fails to
import or to register (any exception, `SystemExit` included) is recorded by name and skipped;
the rest work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from ovi_cli import hookspecs
from ovi_cli.checks import check_path_name
from ovi_cli.errors import OviError, first_line

GROUP = "ovi"
CORE_PACKAGE = "ovi"
# kinds of registered classes, each with its hook in `ovi_cli.hookspecs`
HOOKS = {
    "prior": "register_priors",
    "constraint": "register_constraints",
    "decoder": "register_decoders",
    "model": "register_models",
    "benchmark": "register_benchmarks",
    "scorer": "register_scorers",
    "encoder_family": "register_encoder_families",
    "feature_space": "register_feature_spaces",
    "metric": "register_metrics",
    "image_source": "register_image_sources",
}
KINDS = tuple(HOOKS)
# kinds whose names (and a benchmark's categories) ovi uses as file or folder names: RUN/<category>/,
# scores/<scorer>.jsonl, ...; checked when registered (`checks.check_path_name`)
PATH_NAMED = ("benchmark", "scorer")


@dataclass
class PluginEntry:
    name: str  # the registered class's `name`
    kind: str  # one of KINDS
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
    origins: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # pluggy name -> plugin, package, version

    def get(self, kind: str, name: str) -> type:
        table = self.entries[kind]
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            hint = self.failure_hint(name)
            raise OviError(f"unknown {kind} {name!r}; available: {known} (see `ovi plugins`){hint}")
        return table[name].cls

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def failure_hint(self, name: str) -> str:
        """`; plugin 'X' failed to load: ...` when a plugin that may have provided `name` failed."""
        for f in self.failures:
            if f.plugin == name or name in f.error:
                return f"; plugin {f.plugin!r} from {f.package} failed to load: {f.error}"
        if self.failures:
            names = ", ".join(repr(f.plugin) for f in self.failures)
            return f"; plugins that failed to load: {names}"
        return ""

    def add_plugin(self, module: Any, plugin: str, package: str, version: str) -> None:
        """Register one plugin module (or object) and index what its `register_*` hooks register.

        Entry points go through here, and so can a module handed over in-process (tests, notebooks).
        """
        assert self.manager is not None
        plugin_name = f"{package}:{plugin}"
        self.origins[plugin_name] = (plugin, package, version)
        try:
            self.manager.register(module, name=plugin_name)
        except BaseException as exc:  # noqa: BLE001 - a plugin must not take ovi down
            self.failures.append(PluginFailure(plugin, package, version, first_line(exc)))
            return
        for kind in KINDS:
            caller = getattr(self.manager.hook, HOOKS[kind])
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                try:
                    impl.function(register=_registrar(self, kind, plugin, package, version))
                except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt in a hook too
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    # the hook named: which of the plugin's registrations failed
                    self.failures.append(PluginFailure(plugin, package, version,
                                                       f"{HOOKS[kind]}: {first_line(exc)}"))

    def command_hooks(self) -> list[tuple[str, str, str, Any]]:
        """(plugin, package, version, register_commands function) of every loaded plugin."""
        if self.manager is None:
            return []
        out = []
        for impl in self.manager.hook.register_commands.get_hookimpls():
            plugin, package, version = self.origins[impl.plugin_name]

            def call(impl=impl, **kwargs: Any) -> Any:  # an implementation may take fewer arguments (pluggy's rule)
                return impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})

            out.append((plugin, package, version, call))
        return out


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


def _entry_points() -> list[EntryPoint]:
    """ovi's own entry points first (their names win), then the others; duplicates dropped.

    Several installs of the same distribution (e.g. an editable one) can list an entry point
    twice; keep the first of each (package, name, value).
    """
    seen, out = set(), []
    for ep in entry_points(group=GROUP):
        key = (_dist_of(ep)[0], ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return sorted(out, key=lambda ep: _dist_of(ep)[0] != CORE_PACKAGE)


def new_registry() -> Registry:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return Registry(manager=pm)


def load_registry(extra: list[tuple[str, ModuleType]] | None = None, *, third_party: bool = True) -> Registry:
    """Import every `ovi` entry point, run its `register_*` hooks, and index what it registers.

    `extra`: `(name, module)` pairs registered after the entry points, by the same path
    (package `<in-process>`). `third_party=False`: ovi's own plugins only (e.g. to document them).
    """
    reg = new_registry()
    for ep in _entry_points():
        package, version = _dist_of(ep)
        if not third_party and package != CORE_PACKAGE:
            continue
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - SystemExit at import must not kill `ovi --version`
            if isinstance(exc, KeyboardInterrupt):
                raise
            reg.failures.append(PluginFailure(ep.name, package, version, first_line(exc)))
            continue
        reg.add_plugin(module, ep.name, package, version)
    for name, module in extra or []:
        reg.add_plugin(module, name, "<in-process>", "-")
    return reg


def _registrar(reg: Registry, kind: str, plugin: str, package: str, version: str):
    def register(cls: type) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} class {cls!r} has no `name`")
        if kind in PATH_NAMED:  # these names become file and folder names: never a path, never hidden
            check_path_name(name, f"{kind} name")
            for category in getattr(cls, "categories", ()) if kind == "benchmark" else ():
                check_path_name(category, f"benchmark {name!r}: category")
        if name in reg.entries[kind]:
            other = reg.entries[kind][name]
            raise ValueError(f"{kind} {name!r} from {package} refused: the name is already registered "
                             f"by {other.package} (plugin {other.plugin!r})")
        reg.entries[kind][name] = PluginEntry(name, kind, cls, plugin, package, version)

    return register


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def set_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (`None`: load it again on next use)."""
    global _registry
    _registry = registry
