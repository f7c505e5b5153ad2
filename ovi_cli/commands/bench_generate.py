"""`ovi bench generate` (being built: issue 11)."""

from __future__ import annotations

from ovi_cli.errors import OviError


def generate() -> None:
    """Generate a benchmark's images in the official layout (not built yet)."""
    raise OviError("ovi bench generate is not built yet")
