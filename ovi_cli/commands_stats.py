"""`ovi build-stats` and `ovi stats ...` (statistics stores for the constraints)."""

from __future__ import annotations

import typer

from ovi_cli.errors import OviError


def add_commands(app: typer.Typer) -> None:
    @app.command("build-stats")
    def build_stats() -> None:
        """Build image statistics and a nearest-neighbour index from a folder of images."""
        raise OviError("build-stats is not yet available")
