"""Broken plugins for the tests: ovi must name each failure and keep working.

This module loads, but its register hook raises. `plugin_import_error` fails at import.
"""

from __future__ import annotations

from ovi_cli import hookimpl


@hookimpl
def register_priors(register):
    raise RuntimeError("this plugin is broken on purpose")
