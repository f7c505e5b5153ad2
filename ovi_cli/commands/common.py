"""What several commands share: the run flags mounted once, plugin flag aliases, settings from flags.

`RunCommand` is the click command class of `gen`, `compare` and `bench generate`: to the parameters
Typer builds from the command's own signature it adds the shared run flags (declared once, in
`ovi_cli.options.run_flags`) and every registered plugin's flag aliases (`PluginOption(flag=...)`),
and hands their values to the command through the context. `settings_from_params` is the one
builder of `GenSettings` from a command's flags.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand

from ovi_cli.api import parse_option_assignments
from ovi_cli.settings import GenSettings

FLAGS = "ovi.run_flags"  # ctx.meta key: the values of the mounted flags
# kinds whose plugins' flags gen / compare / bench generate mount, and how the chosen one is found
PLUGIN_FLAG_KINDS = ("prior", "constraint", "decoder", "encoder_family")


def explicit_params(ctx: typer.Context) -> set[str]:
    """Names of the parameters given on the command line (or by environment variable); a plugin's
    flag given counts as `option` too (it sets a plugin option, as `--option` does)."""
    out = set()
    for param in ctx.command.params:
        source = str(ctx.get_parameter_source(param.name)) if param.name else ""
        if source.endswith(("COMMANDLINE", "ENVIRONMENT")):
            out.add(param.name)
            if getattr(param, "ovi_plugin_flag", None) is not None:
                out.add("option")
    return out


def plugin_options(option: list[str] | None, aliases: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """`--option PLUGIN.KEY=VALUE` items, plus the alias flags that were given (`--option` wins)."""
    out: dict[str, dict[str, Any]] = parse_option_assignments(option)
    for (owner, key), value in aliases.items():
        if value is not None:
            out.setdefault(owner, {}).setdefault(key, value)
    return out


# ---- plugin flags ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PluginFlag:
    """A flag a plugin declares on one of its options (`PluginOption(flag=...)`): `owners` are the
    plugins of `kind` that declare it; several: it goes to the chosen one (e.g. each prior's `model`)."""

    flag: str
    kind: str
    key: str
    owners: tuple[str, ...]

    @property
    def param(self) -> str:
        return "plugin_flag_" + self.flag.lstrip("-").replace("-", "_")


def plugin_flags(registry: Any = None, *, several_priors: bool = False,
                 kinds: tuple[str, ...] = PLUGIN_FLAG_KINDS) -> list[tuple[PluginFlag, Any]]:
    """Every registered plugin flag of `kinds`, with one of its `PluginOption`s (for the type and
    help), sorted by flag. `several_priors` (`compare`): a flag several priors share is
    mounted once per prior instead, as `--PRIOR-KEY`."""
    from ovi_cli.plugins import get_registry

    registry = registry or get_registry()
    found: dict[tuple[str, str, str], list[tuple[str, Any]]] = {}
    for kind in kinds:
        for name in registry.names(kind):
            for opt in getattr(registry.get(kind, name), "options", ()) or ():
                flag = getattr(opt, "flag", None)
                if isinstance(flag, str) and flag.startswith("--") and len(flag) > 2:
                    found.setdefault((flag, kind, opt.key), []).append((name, opt))
    out = []
    for (flag, kind, key), owners in sorted(found.items()):
        if several_priors and kind == "prior" and len(owners) > 1:
            out += [(PluginFlag(f"--{name}-{key}", kind, key, (name,)), opt) for name, opt in owners]
        else:
            out.append((PluginFlag(flag, kind, key, tuple(n for n, _ in owners)), owners[0][1]))
    return out


def _flag_help(pf: PluginFlag, opt: Any) -> str:
    value = {int: "N", float: "X", bool: "BOOL"}.get(opt.type, "VALUE")
    if len(pf.owners) == 1:
        head = f"Alias of --option {pf.owners[0]}.{pf.key}={value}"
    else:
        head = f"Alias of --option {pf.kind.upper()}.{pf.key}={value} for the chosen --{pf.kind} " \
               f"({', '.join(pf.owners)})"
    own = (opt.help or "").replace(f"; alias {pf.flag}", "").replace(f"alias {pf.flag}", "").strip(" ;")
    text = f"{head}: {own}" if own and len(pf.owners) == 1 else head
    return text.rstrip(".") + "."


def _flag_params(flags: list[tuple[PluginFlag, Any]]) -> list[Any]:
    """Click options for plugin flags, built by Typer (as every other option) from a made-up signature."""
    import inspect
    from typing import Annotated

    from ovi_cli.options import PLUGIN_OPTIONS

    params = []
    for pf, opt in flags:
        kind = opt.type if opt.type in (int, float, str) else str
        annotation = Annotated[kind | None, typer.Option(
            pf.flag, help=_flag_help(pf, opt), rich_help_panel=PLUGIN_OPTIONS, show_default=False)]
        params.append(inspect.Parameter(pf.param, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=annotation))

    def declaration(**kwargs: Any) -> None:  # pragma: no cover - never called
        """Plugin flags."""

    declaration.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    declaration.__annotations__ = {p.name: p.annotation for p in params}
    built = _typer_params(declaration)
    for param, (pf, _) in zip(built, flags):
        param.ovi_plugin_flag = pf  # type: ignore[attr-defined]
    return built


def _typer_params(declaration: Callable[..., Any]) -> list[Any]:
    """The click parameters Typer builds from `declaration`'s signature."""
    app = typer.Typer()
    app.command()(declaration)
    return list(typer.main.get_command(app).params)


def _shared_params() -> list[Any]:
    """The click parameters of `ovi_cli.options.run_flags` (fresh for each command)."""
    from ovi_cli.options import run_flags

    return _typer_params(run_flags)


class RunCommand(TyperCommand):
    """A command that takes the shared run flags and the plugins' flags (gen, compare, bench generate).

    Its own signature declares what is its own (arguments, `--out`, `--seed` with its own help ...);
    the shared flags it does not declare and does not `exclude` are added, then every plugin flag
    whose name is free. Their values reach the command in `ctx.meta[FLAGS]` (see `flag_values`).
    """

    exclude: ClassVar[frozenset[str]] = frozenset()
    several_priors: ClassVar[bool] = False
    shared: ClassVar[bool] = True  # the shared run flags (False: only the plugin flags of `kinds`)
    kinds: ClassVar[tuple[str, ...]] = PLUGIN_FLAG_KINDS

    def __init__(self, *args: Any, params: list[Any] | None = None, **kwargs: Any) -> None:
        own = list(params or [])
        names = {p.name for p in own}
        shared = _shared_params() if self.shared else []
        added = [p for p in shared if p.name not in names and p.name not in self.exclude]
        taken = {o for p in own + added for o in getattr(p, "opts", [])}
        free = []
        for pf, opt in plugin_flags(several_priors=self.several_priors, kinds=self.kinds):
            if pf.flag not in taken:  # a core flag (or an earlier plugin's) keeps its name
                taken.add(pf.flag)
                free.append((pf, opt))
        added += _flag_params(free) if free else []
        self.mounted = frozenset(p.name for p in added)
        super().__init__(*args, params=own + added, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        ctx.meta[FLAGS] = {name: ctx.params.pop(name) for name in list(ctx.params) if name in self.mounted}
        return super().invoke(ctx)


def run_command(exclude: tuple[str, ...] = (), several_priors: bool = False, shared: bool = True,
                kinds: tuple[str, ...] = PLUGIN_FLAG_KINDS) -> type[RunCommand]:
    """The `RunCommand` class of one command (`app.command(cls=run_command(...))`); `shared=False,
    kinds=("scorer",)`: only the scorers' flags (`bench score`)."""
    return type("RunCommand", (RunCommand,), {"exclude": frozenset(exclude), "several_priors": several_priors,
                                              "shared": shared, "kinds": tuple(kinds)})


def flag_values(ctx: typer.Context) -> dict[str, Any]:
    """Every flag value of a `RunCommand` invocation: its own parameters and the mounted ones."""
    values = dict(ctx.params)
    values.update(ctx.meta.get(FLAGS, {}))
    return values


# ---- settings from flags --------------------------------------------------------------------------
def plugin_aliases(ctx: typer.Context, chosen: Mapping[str, list[str]] | None = None
                   ) -> dict[tuple[str, str], Any]:
    """(plugin, key) -> value of each plugin flag given; a flag several plugins declare goes to the
    chosen one(s) of its kind (a prior flag to `--prior`'s plugin)."""
    values, chosen = flag_values(ctx), chosen or {}
    out: dict[tuple[str, str], Any] = {}
    for param in ctx.command.params:
        pf = getattr(param, "ovi_plugin_flag", None)
        if pf is None or values.get(param.name) is None:
            continue
        owners = pf.owners if len(pf.owners) == 1 else [o for o in pf.owners if o in chosen.get(pf.kind, [])]
        for owner in owners or [chosen.get(pf.kind, ["?"])[0]]:
            out[(owner, pf.key)] = values[param.name]
    return out


def normalise_options(options: Mapping[str, Mapping[str, Any]], registry: Any = None) -> dict[str, dict[str, Any]]:
    """Each plugin option value parsed by its plugin's `PluginOption.parse` (`--option nn.k=2` and
    its alias flag record the same value); owners and keys no plugin declares are kept as given (refused
    later, by name, when the plugin is built)."""
    from ovi_cli.plugins import get_registry

    registry = registry or get_registry()
    declared: dict[str, dict[str, Any]] = {}
    for kind in PLUGIN_FLAG_KINDS:
        for name in registry.names(kind):
            declared.setdefault(name, {o.key: o for o in getattr(registry.get(kind, name), "options", ()) or ()})
    out: dict[str, dict[str, Any]] = {}
    for owner, given in options.items():
        opts = declared.get(owner, {})
        out[owner] = {k: (opts[k].parse(v, owner) if k in opts else v) for k, v in given.items()}
    return out


def settings_from_params(ctx: typer.Context, model: str | None = None, **fixed: Any) -> GenSettings:
    """THE `GenSettings` of a command's flags, the `--model` preset applied to the flags not given.

    Every flag named like a `GenSettings` field is taken as is (`fixed` overrides, e.g. compare's
    `prior="ovi"`); `--constraint`, `--option` and the plugins' flag aliases are gathered into
    `constraints` and `options` (`--option` wins over an alias), each value parsed by its plugin.
    """
    from ovi_cli.api import ConstraintSpec
    from ovi_cli.presets import apply_model

    values = flag_values(ctx)
    settings_values = {f.name: values[f.name] for f in fields(GenSettings)
                       if f.name in values and f.name not in ("constraints", "options")}
    settings_values.update(fixed)
    settings_values["constraints"] = list(values.get("constraint") or [])
    settings = apply_model(GenSettings(**settings_values), values.get("model", model), explicit_params(ctx))
    chosen = {"prior": [settings.prior], "decoder": [settings.decoder], "encoder_family": [settings.encoder_family],
              "constraint": [ConstraintSpec.parse(c).name for c in settings.constraints]}
    given = plugin_options(list(values.get("option") or []) or None, plugin_aliases(ctx, chosen))
    merged = {**{k: dict(v) for k, v in settings.options.items()}}
    for owner, opts in given.items():
        merged.setdefault(owner, {}).update(opts)
    settings.options = normalise_options(merged) if merged else {}
    return settings


def warn_about_prompts(model: str | None, prompts: list[str], warn: Callable[[str], None]) -> None:
    """The model preset's warnings about the prompts (e.g. words the toy vocabulary lacks), once per run."""
    from ovi_cli.presets import prompt_warnings

    for message in prompt_warnings(model, prompts):
        warn(message)
