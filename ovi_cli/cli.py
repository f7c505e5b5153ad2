"""The `ovi` command line: builds the Typer app, maps errors to one line, mounts plugin commands.

The commands live in `ovi_cli.commands` (one module per command group) and stay thin over the
library. Nothing heavy is imported here: `ovi --help` and `ovi --version` load neither torch nor
any model library (plugins register without importing their heavy modules).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Any

import typer

from ovi_cli import __version__
from ovi_cli.console import UI, error_line
from ovi_cli.errors import INTERRUPTED, OviError, first_line

# Typer may vendor its own click: take the exception classes from Typer's own hierarchy.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")



def _version(value: bool) -> None:
    if value:
        typer.echo(f"ovi {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Text-to-image with Kandinsky 2.2 and no trained prior (OVI).

    Start offline in seconds: ovi gen "a red circle" --model toy
    """


def core_app() -> typer.Typer:
    """The app with ovi's own commands (no plugin commands)."""
    from ovi_cli.commands import bench, compare, gen, plugins, stats

    app = typer.Typer(
        name="ovi",
        help="Text-to-image with Kandinsky 2.2 and no trained prior: Optimization-based Visual Inversion (OVI).\n\n"
        'Start offline in seconds: ovi gen "a red circle" --model toy',
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_root)
    app.command("gen", cls=gen.GenCommand)(gen.gen)  # RunCommand: the shared run flags, the plugins' flags
    app.command("compare", cls=compare.CompareCommand)(compare.compare)
    app.command("build-stats")(stats.build_stats)
    app.add_typer(stats.stats_app(), name="stats")
    app.add_typer(bench.bench_app(), name="bench")
    app.command("plugins")(plugins.plugins_cmd)
    return app


def command_names(app: typer.Typer) -> set[str]:
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    return names | {g.name for g in app.registered_groups if g.name}


def mount_plugin_commands(app: typer.Typer, warn=error_line) -> None:
    """Let each plugin add its commands; one that replaces an existing command is refused."""
    from ovi_cli.plugins import get_registry

    for plugin, package, _version, register in get_registry().command_hooks():
        before_cmds, before_groups = list(app.registered_commands), list(app.registered_groups)
        taken = command_names(app)
        try:
            register(cli=app, ui=UI())
        except BaseException as exc:  # noqa: BLE001 - a plugin's SystemExit must not end ovi
            if isinstance(exc, KeyboardInterrupt):
                raise
            app.registered_commands[:], app.registered_groups[:] = before_cmds, before_groups
            warn(f"plugin {plugin!r} from {package} failed to add its commands: {first_line(exc)}")
            continue
        new_cmds = app.registered_commands[len(before_cmds):]
        new_groups = app.registered_groups[len(before_groups):]
        clash = sorted(({c.name or c.callback.__name__ for c in new_cmds} | {g.name for g in new_groups}) & taken)
        if clash:
            app.registered_commands[:], app.registered_groups[:] = before_cmds, before_groups
            warn(f"plugin {plugin!r} from {package} tried to replace the command(s) {', '.join(clash)}; "
                 "its commands were not added")


def build_app() -> typer.Typer:
    app = core_app()
    mount_plugin_commands(app)
    return app


def _hide_flag_types(command: Any) -> None:
    """On/off flags show no value type in `--help`, in every command and group (plugins' too).

    Typer 0.29's Rich help prints each option's `display_type_rich()` in a type column, and for a
    flag that is `<bool>`, as if `--quiet` took a value (its plain help skips flags; the Rich one
    does not check). An empty metavar is shown instead, for the declared flags and for `--help`,
    which click creates per command on demand.
    """
    params = list(command.params)
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False) and not getattr(param, "count", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


def cli_command(app: typer.Typer | None = None) -> Any:
    """The click command `ovi` runs (`build_app()` unless `app` is given), ready to run or document."""
    command = typer.main.get_command(app if app is not None else build_app())
    _hide_flag_types(command)
    return command


def _quiet_environment() -> None:
    """transformers/diffusers log and draw bars of their own; ovi shows its own progress instead."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry: every error is one line on stderr and a non-zero exit.

    User errors exit 2, Ctrl-C 130, anything unexpected 1 (the traceback only with OVI_DEBUG=1).
    """
    _quiet_environment()
    try:
        command = cli_command()
        rv = command.main(args=argv, prog_name="ovi", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `ovi` alone: Typer has printed the help
            sys.exit(0)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        error_line(exc.format_message().replace("\n", " ") + hint)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        error_line(INTERRUPTED)
        sys.exit(130)
    except OviError as exc:
        error_line(str(exc).replace("\n", " "))
        sys.exit(exc.exit_code)
    except _ClickException as exc:
        error_line(exc.format_message().replace("\n", " "))
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - a bug or an unforeseen failure: still one line
        if os.environ.get("OVI_DEBUG"):
            traceback.print_exc()
        error_line(f"unexpected error: {first_line(exc)} (set OVI_DEBUG=1 for the traceback)")
        sys.exit(1)
    if isinstance(rv, int) and rv != 0:
        if rv == 130:  # Typer turns Ctrl-C into Exit(130) before our except clause sees it
            error_line(INTERRUPTED)
        sys.exit(rv)
    return rv
