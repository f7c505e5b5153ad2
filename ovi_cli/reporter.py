"""The one progress protocol: how every run (gen, compare, bench, scoring, fidelity, build-stats) and
every plugin reports. The CLI renders it with Rich (`ovi_cli.console.RichReporter`); a library caller
subclasses it or keeps the silent default. Nothing that reports ever prints.

Pure and light (no torch, no terminal), so every layer may use it, the stats layer included.
"""

from __future__ import annotations


class Reporter:
    """Progress and warnings from a run. Default: silent; override what you want to see."""

    def warn(self, message: str) -> None:
        """A warning for the user, one line."""

    def info(self, message: str) -> None:
        """A plain line for the user (e.g. "resuming: 3 of 5 prompts already done")."""

    def stage(self, name: str) -> None:
        """What is happening now (loading models, ...)."""

    def start(self, label: str, total: int | None) -> None:
        """A counted task starts (images to score, files to encode, ...); `total` None: unknown."""

    def advance(self, done: int = 1, info: str = "") -> None:
        """`done` more units of the current counted task; `info` a short live text (rate, cosine)."""

    def new_batch(self, label: str) -> None:
        """The next batch of prompts (or the next prior of a comparison) starts."""

    def ovi_progress(self, step: int, total: int, values: dict[str, list[float]]) -> None:
        """OVI's step `step` of `total`; `values` per prompt, e.g. `{"cos": [...]}`."""

    def decode_progress(self, step: int, total: int) -> None:
        """The decoder's step `step` of `total`."""


class WarnReporter(Reporter):
    """A silent reporter that passes warnings to a callback (for callers that only take `warn`)."""

    def __init__(self, warn) -> None:
        self._warn = warn

    def warn(self, message: str) -> None:
        self._warn(message)
