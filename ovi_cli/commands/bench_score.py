"""`ovi bench score` and `ovi bench table` (being built: issue 11)."""

from __future__ import annotations

from ovi_cli.errors import OviError


def score() -> None:
    """Score a benchmark run (not built yet)."""
    raise OviError("ovi bench score is not built yet")


def table() -> None:
    """Tabulate benchmark runs (not built yet)."""
    raise OviError("ovi bench table is not built yet")
