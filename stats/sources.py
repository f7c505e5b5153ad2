"""Where `ovi build-stats SOURCE` reads from: the image-source seam.

A source turns what the user typed (a folder, a brace pattern of webdataset shards, a
clip-retrieval embeddings folder, ...) into an ordered stream of `SourceSample`s: a key, either
encoded image bytes or a ready embedding, and the row's metadata (caption, url, file name).
The build code only sees samples, so every source gets resume, `--shard I/N`, torchrun splits,
skipped-and-counted bad samples and the same store format for free.

Sources are plugins (`register_image_sources`); this module holds their base class, which lives
in `ovi_stats` (and is re-exported by `ovi_cli.api`) because the stats layer sits below the
plugin contract and must not import it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class SourceSample:
    """One row of a statistics store, as a source yields it.

    Exactly one of `image` (the encoded file's bytes: JPEG, PNG, ...) and `embedding` (a 1-D
    array, already in the encoder's space) is set. `error` marks a sample that is present but
    unusable (no image in a webdataset sample, a damaged member): the build skips it and counts
    it under that reason, never stops.
    """

    key: str  # unique within the source, stable across runs: a relative path, a shard/key, a row number
    image: bytes | None = None
    embedding: Any = None  # numpy array [D] (float16/float32), for embedding sources
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able: caption, url, file, shard, ...
    error: str | None = None


class ImageSource(ABC):
    """A readable collection of images or embeddings, selected by the text the user gave.

    ovi constructs a source with the user's `spec` and the source's resolved options, calls
    `check()` before any model loads (one-line errors: missing files, a missing extra), then
    `describe()` (recorded in the build plan: a resume with another source is refused) and
    `samples(...)` as often as it needs (each call starts from `start`).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    yields: ClassVar[str] = "images"  # "images" (encoded bytes) or "embeddings"
    options: ClassVar[tuple[Any, ...]] = ()  # `ovi_cli.api.PluginOption`s, read from `self.options`
    priority: ClassVar[int] = 0  # when several sources claim a spec, the highest wins

    def __init__(self, spec: str, options: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.options = dict(options or {})

    @classmethod
    @abstractmethod
    def claims(cls, spec: str) -> bool:
        """True when this source reads `spec` (cheap: no full scan, no heavy import)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise a one-line `OviError` when the source cannot be read (before any model loads)."""

    @abstractmethod
    def keys(self) -> list[str]:
        """Every sample's key, in the source's fixed order (what shards and resume index)."""

    @abstractmethod
    def samples(self, positions: list[int] | None = None) -> Iterator[SourceSample]:
        """The samples at `positions` of `keys()` (all, in order, when None), in that order."""

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the source (kind, spec, counts); a resume compares it."""
        return {"source": self.name, "spec": self.spec}
