"""Built-in image sources for `ovi build-stats SOURCE` (entry point `sources`).

- `folder`: a folder of image files (`ovi_stats.sources.FolderSource`).
- `webdataset`: img2dataset / webdataset shards: `shards/{00000..00099}.tar` (brace pattern), a list
  of tar files (`a.tar::b.tar`, or several paths on the command line), or a folder of `.tar` files.
  Each sample's `KEY.jpg|png|webp` (the image), `KEY.txt` (caption) and `KEY.json` (url, ...) come
  through the `webdataset` package's tar reader, streamed without extracting. A unit is a tar.
- `clip-retrieval`: clip-retrieval's inference output (`img_emb/img_emb_N.npy` float16 +
  `metadata/metadata_N.parquet`, row-aligned), read in bounded chunks with numpy memory maps and
  pyarrow; files are paired and ordered by N as a number (img_emb_2 before img_emb_10).

The readers are in the `ovi[scale]` extra; without it, the two web-scale sources say so in one line.
Light at import: webdataset and pyarrow are imported when a source reads.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ovi_cli import hookimpl
from ovi_cli.errors import OviError, first_line
from ovi_stats.sources import EmbeddingChunk, FolderSource, ImageSource, SourceSample

SCALE_EXTRA = "pip install 'ovi[scale]'"
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
LIST_SEPARATOR = "::"  # webdataset's own separator for lists of shard URLs


def need(module: str, what: str) -> Any:
    """Import `module`, or one line naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OviError(f"{what} needs the {module!r} package: {SCALE_EXTRA}") from None


# ---- webdataset shards -------------------------------------------------------------------------
def expand_shards(spec: str) -> list[str]:
    """Tar paths of `spec`: `::`-separated parts, each a brace pattern, a tar file or a folder of tars."""
    braceexpand = need("braceexpand", "reading webdataset shards").braceexpand
    out: list[str] = []
    for part in (p.strip() for p in spec.split(LIST_SEPARATOR)):
        if not part:
            continue
        path = os.path.expanduser(part)
        if os.path.isdir(path):
            out += sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".tar"))
        else:
            out += [os.path.expanduser(p) for p in braceexpand(part)]
    return out


class WebdatasetSource(ImageSource):
    """img2dataset's webdataset layout: tar shards of KEY.jpg / KEY.txt / KEY.json."""

    name = "webdataset"
    description = "webdataset / img2dataset tar shards: a brace pattern, tar files (a.tar::b.tar) or a folder of tars"
    priority = 10
    row_metadata = True

    @classmethod
    def claims(cls, spec: str) -> bool:
        parts = [p.strip() for p in spec.split(LIST_SEPARATOR) if p.strip()]
        if parts and all(p.endswith(".tar") for p in parts):
            return True
        path = os.path.expanduser(spec)
        if os.path.isdir(path):
            try:
                return any(n.endswith(".tar") for n in os.listdir(path))
            except OSError:
                return False
        return False

    def check(self) -> None:
        need("webdataset", "reading webdataset shards")
        tars = expand_shards(self.spec)
        if not tars:
            raise OviError(f"no .tar shards in {self.spec!r}")
        missing = [t for t in tars if not os.path.isfile(t)]
        if missing:
            raise OviError(f"{len(missing)} of {len(tars)} shards of {self.spec!r} do not exist (e.g. {missing[0]!r})")

    def root(self) -> str:
        tars = [os.path.abspath(t) for t in expand_shards(self.spec)]
        return os.path.commonpath([os.path.dirname(t) for t in tars]) if tars else os.path.abspath(self.spec)

    def units(self) -> list[str]:
        root = self.root()
        return [os.path.relpath(os.path.abspath(t), root).replace(os.sep, "/") for t in expand_shards(self.spec)]

    def samples(self, unit: str, skip: int = 0) -> Iterator[SourceSample]:
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        path = os.path.join(self.root(), unit)
        seen = 0
        try:
            with open(path, "rb") as stream:
                members = ({**m, "__url__": unit} for m in tar_file_iterator(stream))
                for sample in group_by_keys(members):
                    seen += 1
                    if seen > skip:
                        yield self._sample(unit, sample)
        except Exception as exc:  # noqa: BLE001 - a damaged or truncated tar: skipped and counted, never fatal
            problem = first_line(exc)
        else:
            # tarfile's stream mode ends quietly at a header cut short; a tar is whole 512-byte blocks
            size = os.path.getsize(path)
            problem = None if size % 512 == 0 else f"truncated: {size} bytes is not a whole number of 512-byte blocks"
        if problem is not None:
            seen += 1
            if seen > skip:
                yield SourceSample(key=f"{unit}#damaged-after-{seen - 1}", error=f"damaged tar ({problem})",
                                   metadata={"shard": unit})

    @staticmethod
    def _sample(unit: str, sample: dict) -> SourceSample:
        key = str(sample.get("__key__", ""))
        meta: dict[str, Any] = {"key": key, "shard": unit}
        if isinstance(sample.get("json"), (bytes, bytearray)):
            try:
                info = json.loads(sample["json"])
                if isinstance(info, dict):
                    meta.update({k: info[k] for k in ("url", "caption", "width", "height") if k in info})
            except ValueError:
                pass
        if isinstance(sample.get("txt"), (bytes, bytearray)):
            meta["caption"] = sample["txt"].decode("utf-8", errors="replace")
        image = next((sample[s] for s in IMAGE_SUFFIXES if isinstance(sample.get(s), (bytes, bytearray))), None)
        if image is None:
            return SourceSample(key=f"{unit}/{key}", metadata=meta, error="no image in the sample")
        return SourceSample(key=f"{unit}/{key}", image=bytes(image), metadata=meta)

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "spec": self.spec}


# ---- clip-retrieval embeddings -------------------------------------------------------------------
_NUMBERED = re.compile(r"^(?:img_emb|metadata)_(\d+)\.(?:npy|parquet)$")


def numbered(folder: Path, suffix: str) -> dict[int, Path]:
    """`{N: path}` of `*_N.suffix` files in `folder` (N as a number: 2 before 10)."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _NUMBERED.match(p.name)
            if m and p.name.endswith(suffix):
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


class ClipRetrievalSource(ImageSource):
    """clip-retrieval's output folder: `img_emb/img_emb_N.npy` + `metadata/metadata_N.parquet`."""

    name = "clip-retrieval"
    description = "clip-retrieval inference output: img_emb/img_emb_N.npy (float16) + metadata/metadata_N.parquet"
    yields = "embeddings"
    priority = 20
    row_metadata = True

    def __init__(self, spec: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(spec, options)
        self.folder = Path(spec).expanduser().absolute()

    @classmethod
    def claims(cls, spec: str) -> bool:
        return (Path(spec).expanduser() / "img_emb").is_dir()

    def root(self) -> str:
        return str(self.folder)

    def _pairs(self) -> list[tuple[int, Path, Path | None]]:
        emb = numbered(self.folder / "img_emb", ".npy")
        meta = numbered(self.folder / "metadata", ".parquet")
        return [(n, p, meta.get(n)) for n, p in emb.items()]

    def check(self) -> None:
        pq = need("pyarrow.parquet", "reading clip-retrieval metadata")
        pairs = self._pairs()
        if not pairs:
            raise OviError(f"no img_emb/img_emb_N.npy files in {str(self.folder)!r}")
        has_meta = (self.folder / "metadata").is_dir()
        for n, emb, meta in pairs:
            rows = self._header(emb)[0][0]
            if has_meta:
                if meta is None:
                    raise OviError(f"{str(emb)!r} has no metadata/metadata_{n}.parquet beside it")
                try:
                    meta_rows = pq.ParquetFile(meta).metadata.num_rows
                except Exception as exc:  # noqa: BLE001 - a damaged parquet footer
                    raise OviError(f"cannot read {str(meta)!r}: {first_line(exc)}") from None
                if meta_rows != rows:
                    raise OviError(f"{str(meta)!r} has {meta_rows} rows but {str(emb)!r} holds {rows} embeddings")

    @staticmethod
    def _header(path: Path) -> tuple[tuple[int, ...], Any]:
        import numpy as np

        try:
            arr = np.load(path, mmap_mode="r")
        except Exception as exc:  # noqa: BLE001
            raise OviError(f"cannot read {str(path)!r} as .npy: {first_line(exc)}") from None
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise OviError(f"{str(path)!r} holds a {arr.dtype} array of shape {arr.shape}; need float [N, D]")
        return arr.shape, arr.dtype

    def embedding_dim(self) -> int:
        dims = {self._header(p)[0][1] for _, p, _ in self._pairs()}
        if len(dims) != 1:
            raise OviError(f"the img_emb files of {str(self.folder)!r} have different widths: {sorted(dims)}")
        return dims.pop()

    def embedding_count(self) -> int:
        return sum(self._header(p)[0][0] for _, p, _ in self._pairs())

    def embedding_chunks(self, rows: int) -> Iterator[EmbeddingChunk]:
        import numpy as np

        from ovi_stats.validate import npy_header

        pq = need("pyarrow.parquet", "reading clip-retrieval metadata")
        for n, emb_path, meta_path in self._pairs():
            (count, dim), dtype, offset = npy_header(emb_path)
            batches = pq.ParquetFile(meta_path).iter_batches(batch_size=rows) if meta_path else None
            for lo in range(0, count, rows):
                # plain reads, not a memory map: mapped pages would count in the process's memory
                take = min(rows, count - lo)
                block = np.fromfile(emb_path, dtype=dtype, count=take * dim,
                                    offset=offset + lo * dim * dtype.itemsize).reshape(take, dim)
                if batches is not None:
                    table = next(batches).to_pylist()
                    if len(table) != len(block):  # iter_batches gives exactly `rows` a batch but the last
                        raise OviError(f"{str(meta_path)!r} is not row-aligned with {str(emb_path)!r} at row {lo}")
                else:
                    table = [{} for _ in range(len(block))]
                keys = [str(m.get("image_path") or m.get("url") or f"img_emb_{n}#{lo + i}")
                        for i, m in enumerate(table)]
                meta = [{"key": k, **{c: v for c, v in m.items() if v is not None}} for k, m in zip(keys, table)]
                where = f"img_emb/{emb_path.name} rows {lo}..{lo + len(block) - 1}"
                yield EmbeddingChunk(block, keys, meta, where=where)

    def describe(self) -> dict[str, Any]:
        return {"source": self.name, "spec": str(self.folder)}


@hookimpl
def register_image_sources(register):
    register(FolderSource)
    register(WebdatasetSource)
    register(ClipRetrievalSource)
