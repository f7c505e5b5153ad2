"""Where `ovi build-stats SOURCE` reads from: the image-source seam.

A source turns what the user typed (a folder, a brace pattern of webdataset shards, a
clip-retrieval embeddings folder, ...) into ordered *units* (an image file, a tar shard, an
embeddings file) and, for each unit, an ordered stream of `SourceSample`s: a key, the encoded
image (bytes, or a local file the decoder opens itself) and the row's metadata (caption, url ...).
The build code (`ovi_stats.build`) only sees units and samples, so every image source gets
batching, decoding workers, checkpoints and `--resume`, `--shard I/N` and torchrun splits (whole
units to each share while there are enough of them, else every N-th sample of each unit),
skipped-and-counted bad samples and the same store format.

A source whose samples are embeddings already (`yields = "embeddings"`, e.g. clip-retrieval's
`img_emb/` + `metadata/`) gives them in bounded chunks instead (`embedding_count`,
`embedding_dim`, `embedding_chunks`): `ovi_stats.build.build_from_source_embeddings` copies them.

Sources are plugins (`register_image_sources`); this module holds their base class, which lives
in `ovi_stats` (and is re-exported by `ovi_cli.api`) because the stats layer sits below the
plugin contract and must not import it. The command layer picks the source (`claims`, highest
`priority`, or `--source NAME`) and hands the constructed object to the build.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class SourceSample:
    """One sample of a source's unit.

    The image is `image` (the encoded file's bytes: JPEG, PNG, ...) or `path` (a local file the
    decoding worker opens itself, so nothing is read twice); `embedding` is a 1-D array already in
    the encoder's space (embedding sources). `error` marks a sample that is present but unusable
    (no image in a webdataset sample, a damaged tar): the build skips it and counts it under that
    reason, never stops.
    """

    key: str  # unique within the source, stable across runs: a relative path, shard/key, a row number
    image: bytes | None = None
    path: str | None = None
    embedding: Any = None  # numpy array [D] (float16/float32), for embedding sources
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able: key, caption, url, shard, ...
    error: str | None = None


@dataclass
class EmbeddingChunk:
    """Consecutive rows of an embedding source: `embeddings` [n, D], and n keys and metadata objects."""

    embeddings: Any  # numpy array [n, D]
    keys: list[str]
    metadata: list[dict[str, Any]]
    where: str = ""  # for error messages: "img_emb/img_emb_3.npy rows 0..8191"


class ImageSource(ABC):
    """A readable collection of images or embeddings, selected by the text the user gave.

    ovi constructs a source with the user's `spec` and the source's resolved options, calls
    `check()` before any model loads (one-line `OviError`s: missing files, a missing extra), then
    `describe()` (recorded in the build plan: a resume with another source is refused), `units()`
    once (the plan records them) and `samples(unit, skip)` as often as it needs, from decoding
    workers too (so a source must be picklable and cheap to iterate from the start of a unit).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    yields: ClassVar[str] = "images"  # "images" (encoded bytes or files) or "embeddings"
    options: ClassVar[tuple[Any, ...]] = ()  # `ovi_cli.api.PluginOption`s, read from `self.options`
    priority: ClassVar[int] = 0  # when several sources claim a spec, the highest wins
    row_metadata: ClassVar[bool] = False  # samples carry metadata worth a store's metadata.jsonl
    single_sample_units: ClassVar[bool] = False  # one sample a unit (files): --limit/--shard count units

    def __init__(self, spec: str, options: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.options = dict(options or {})

    @classmethod
    @abstractmethod
    def claims(cls, spec: str) -> bool:
        """True when this source reads `spec` (cheap: no full scan, no heavy import)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise a one-line `OviError` when the source cannot be read (before any model loads)."""

    def root(self) -> str:
        """The local folder the units are relative to (the store's `source_dir`)."""
        return self.spec

    # ---- image sources ----------------------------------------------------------------------
    def units(self) -> list[str]:
        """Every unit, in the source's fixed order, as paths relative to `root()`."""
        raise NotImplementedError(f"source {self.name!r} yields {self.yields}, not image units")

    def samples(self, unit: str, skip: int = 0) -> Iterator[SourceSample]:
        """The samples of `unit` in order, the first `skip` passed over (cheaply where possible)."""
        raise NotImplementedError(f"source {self.name!r} yields {self.yields}, not image samples")

    # ---- embedding sources ------------------------------------------------------------------
    def embedding_dim(self) -> int:
        """The embeddings' width, read from file headers (before anything else is read)."""
        raise NotImplementedError(f"source {self.name!r} yields {self.yields}, not embeddings")

    def embedding_count(self) -> int:
        raise NotImplementedError(f"source {self.name!r} yields {self.yields}, not embeddings")

    def embedding_chunks(self, rows: int) -> Iterator[EmbeddingChunk]:
        """Every row in order, at most `rows` at a time (memory bounded by `rows`)."""
        raise NotImplementedError(f"source {self.name!r} yields {self.yields}, not embeddings")

    def describe(self) -> dict[str, Any]:
        """JSON-able identity of the source (kind, spec, counts); a resume compares it."""
        return {"source": self.name, "spec": self.spec}


class FolderSource(ImageSource):
    """A folder of image files, searched recursively (`ovi_stats.images.find_images`): a unit is a file.

    Built in here (not only as a plugin) because `ovi_stats.build.build_stats(PATH, ...)` takes a
    folder's path directly; `ovi_plugins.sources` registers it like every other source.
    """

    name = "folder"
    description = "a folder of image files (png, jpg, jpeg, webp, bmp, gif), searched recursively"
    single_sample_units = True  # --limit and --shard count files

    def __init__(self, spec: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(spec, options)
        self._root = str(Path(spec).expanduser().absolute())

    @classmethod
    def claims(cls, spec: str) -> bool:
        return os.path.isdir(os.path.expanduser(spec))

    def check(self) -> None:
        from ovi_cli.errors import OviError

        if not os.path.isdir(self._root):
            raise OviError(f"{self.spec!r} is not a folder")

    def root(self) -> str:
        return self._root

    def units(self) -> list[str]:
        from ovi_cli.errors import OviError
        from ovi_stats.images import IMAGE_EXTENSIONS, find_images

        files = find_images(self._root)
        if not files:
            raise OviError(f"no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) under {self._root!r}")
        return files

    def samples(self, unit: str, skip: int = 0) -> Iterator[SourceSample]:
        if skip == 0:
            yield SourceSample(key=unit, path=os.path.join(self._root, unit))

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "spec": self._root}
