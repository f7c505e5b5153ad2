"""The installed ovi's version, read from its distribution metadata (no import of the `ovi_cli` package,
so any layer may ask, the stats layer included, without an import circle)."""

from __future__ import annotations


def ovi_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ovi")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+unknown"
