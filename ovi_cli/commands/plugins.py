"""`ovi plugins`: what is loaded, from which package and version, and what failed."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ovi_cli import options


def plugins_cmd(
    json_out: options.Json = False,
    show_options: Annotated[bool, typer.Option(
        "--options", help="Also list each plugin's options (set with --option PLUGIN.KEY=VALUE).")] = False,
) -> None:
    """List loaded plugins: what each registers, from which package and version, and their options."""
    from rich.console import Console
    from rich.table import Table

    from ovi_cli.console import print_table
    from ovi_cli.plugins import KINDS, get_registry

    reg = get_registry()
    rows = []
    for kind in KINDS:
        for e in sorted(reg.entries[kind].values(), key=lambda e: e.name):
            opts = [{"key": o.key, "type": o.type.__name__, "default": o.default, "help": o.help}
                    for o in getattr(e.cls, "options", ())]
            rows.append({"name": e.name, "kind": e.kind, "plugin": e.plugin, "package": e.package,
                         "version": e.version, "description": getattr(e.cls, "description", ""),
                         "options": opts})
    failures = [f.__dict__ for f in reg.failures]
    if json_out:
        typer.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2, default=str))
        return
    table = Table(title="ovi plugins")
    for col in ("name", "kind", "package", "version", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["package"], r["version"], r["description"])
    console = Console()
    print_table(table, console)
    if show_options:
        opt_table = Table(title="plugin options (--option PLUGIN.KEY=VALUE)")
        for col in ("option", "type", "default", "help"):
            opt_table.add_column(col)
        for r in rows:
            for o in r["options"]:
                opt_table.add_row(f"{r['name']}.{o['key']}", o["type"], str(o["default"]), o["help"])
        print_table(opt_table, console)
    for f in reg.failures:
        console.print(f"[red]failed to load[/red] plugin {f.plugin!r} from {f.package} "
                      f"{f.version}: {f.error}", highlight=False)
