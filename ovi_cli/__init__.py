"""ovi: text-to-image with Kandinsky 2.2 and no trained prior (Optimization-based Visual Inversion)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ovi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from ovi_cli.hookspecs import hookimpl  # noqa: E402  (plugins write `@ovi_cli.hookimpl`)

__all__ = ["__version__", "hookimpl"]
