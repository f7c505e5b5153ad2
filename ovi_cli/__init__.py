"""ovi: text-to-image with Kandinsky 2.2 and no trained prior (Optimization-based Visual Inversion).

`__version__` and `hookimpl` load on first use, so that starting the `ovi` command imports nothing
before its Ctrl-C handler is in place (`ovi_cli.entry`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["OviPriorPipeline", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ovi_cli.version import ovi_version

        value = ovi_version()
    elif name == "hookimpl":  # plugins write `@ovi_cli.hookimpl`
        from ovi_cli.hookspecs import hookimpl as value
    elif name == "OviPriorPipeline":  # `from ovi_cli import OviPriorPipeline` (imports torch: only on use)
        from ovi_cli.prior_pipeline import OviPriorPipeline as value
    else:
        raise AttributeError(f"module 'ovi_cli' has no attribute {name!r}")
    globals()[name] = value
    return value
