"""What a statistics store is, what `--force` may replace, and the checks made when one is opened.

A store is recognised by its marker file `ovi-store.json` (`{"kind": "ovi-statistics-store",
"format_version": 1}`), written last into every store this ovi builds. Stores written before the
marker existed (format 1 without it, e.g. the shipped toy store) are recognised as *legacy*: a
folder whose `meta.json` is an object with `"format_version": 1` and an `encoder.fingerprint`, next
to a `moments.safetensors`. Both are read; `--force` replaces either, but only when the folder holds
nothing except a store's own files (so a user's file is never deleted with it).

Opening a store checks, before anything uses it (one line naming the store and the problem):
the types in `meta.json`; count = rows of `embeddings.npy` (read from its header, and the file is
long enough) = length of `files.json` = the index's size; the index's dimension; the moments'
shapes, count and finiteness. An index copied from another store of the same size and dimension
cannot be told apart this way.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ovi_cli.errors import OviError, first_line
from ovi_stats.index import INDEX_KINDS  # noqa: F401 - re-exported (index.py imports faiss lazily)

FORMAT_VERSION = 1
META = "meta.json"
MOMENTS = "moments.safetensors"
EMBEDDINGS = "embeddings.npy"
FILES = "files.json"
INDEX = "index.faiss"
ROW_META = "metadata.jsonl"  # optional: one JSON object a row (key, caption, url, ... from the source)
ROW_OFFSETS = "metadata.offsets.npy"  # optional: byte offset of each line of metadata.jsonl (+ the end)
MARKER = "ovi-store.json"  # written last into every store: what `--force` relies on
MARKER_KIND = "ovi-statistics-store"
STORE_FILES = (META, MOMENTS, EMBEDDINGS, FILES, INDEX, MARKER, ROW_META, ROW_OFFSETS)
MOMENT_SHAPES = {"count": "", "mean": "D", "cov": "DD", "m3": "D", "q4": "", "shrinkage": "",
                 "precision_cholesky": "DD"}


class BadStore(OviError):
    """A store that cannot be used: `bad statistics store 'PATH': what is wrong`."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"bad statistics store {str(path)!r}: {problem}")
        self.path, self.problem = Path(path), problem


def marker_payload() -> dict[str, Any]:
    return {"kind": MARKER_KIND, "format_version": FORMAT_VERSION}


def _read_json(path: Path) -> Any:
    """JSON from a file; nesting too deep for the parser is a `ValueError` like any other bad JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def has_marker(path: Path) -> bool:
    marker = path / MARKER
    if marker.is_symlink() or not marker.is_file():
        return False
    try:
        data = _read_json(marker)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == MARKER_KIND


def is_legacy_store(path: Path) -> bool:
    """A format-1 store written before the marker: meta.json (format 1, an encoder fingerprint) + moments."""
    if not (path / MOMENTS).is_file() or not (path / META).is_file():
        return False
    try:
        meta = _read_json(path / META)
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("format_version") == 1 and isinstance(meta.get("encoder"), dict)
            and isinstance(meta["encoder"].get("fingerprint"), str))


def store_kind(path: Path) -> str | None:
    """"marked", "legacy" or None (not a store)."""
    if path.is_symlink() or not path.is_dir():
        return None
    if has_marker(path):
        return "marked"
    return "legacy" if is_legacy_store(path) else None


def looks_like_store(path: Path) -> bool:
    """A folder that claims to be a store (marker or meta.json): opening it validates it."""
    return path.is_dir() and ((path / MARKER).exists() or (path / META).exists())


# ---- what may be replaced --------------------------------------------------------------------
def check_replaceable(path: Path, flag: str = "--force") -> None:
    """Refuse (one line) to replace anything at `path` that is not a store folder ovi wrote."""
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise OviError(f"{flag}: {str(path)!r} is a symbolic link, not a statistics store; refusing to replace it")
    if not path.is_dir():
        raise OviError(f"{flag}: {str(path)!r} is a file, not a statistics store; refusing to replace it")
    if store_kind(path) is None:
        raise OviError(f"{flag}: {str(path)!r} is not an ovi statistics store (no {MARKER}); "
                       "--force only replaces stores: choose another --out")
    extra = sorted(e.name for e in os.scandir(path) if e.name not in STORE_FILES)
    if extra:
        raise OviError(f"{flag}: the store {str(path)!r} also holds {len(extra)} file(s) that are not part of a "
                       f"store (e.g. {extra[0]!r}); refusing to delete them: move them away or choose another --out")


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_not_overlapping(out: Path, inputs: Sequence[Path], what: str) -> None:
    """Refuse an output folder that is, or contains, one of the inputs (source images, dumps, stores)."""
    target = Path(os.path.realpath(out))
    for p in inputs:
        real = Path(os.path.realpath(p))
        if _inside(real, target):
            raise OviError(f"--out {str(out)!r} would replace {what} {str(p)!r}: choose another --out")


# ---- validation when opened ------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def meta_problem(meta: Any) -> str | None:
    """What is wrong with a `meta.json` object (None when nothing is)."""
    if not isinstance(meta, dict):
        return f"{META} holds a JSON {type(meta).__name__}, not an object"
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        return f"{META}: format_version is {version!r}, not a positive integer"
    if version > FORMAT_VERSION:
        return (f"format version {version}; this ovi reads version {FORMAT_VERSION} or older "
                "(upgrade ovi or rebuild the store)")
    for key, minimum in (("count", 2), ("dim", 1)):
        if key not in meta:
            return f"{META} has no {key!r}"
        if not _is_int(meta[key]) or meta[key] < minimum:
            return f"{META}: {key} is {meta[key]!r}, not an integer >= {minimum}"
    enc = meta.get("encoder")
    if not isinstance(enc, dict) or not isinstance(enc.get("fingerprint"), str):
        return f"{META}: encoder must be an object with a fingerprint string"
    index = meta.get("index")
    if not isinstance(index, dict) or index.get("type") not in INDEX_KINDS:
        return f"{META}: index must be an object with a type among {', '.join(INDEX_KINDS)}"
    if not isinstance(meta.get("skipped", []), list) or not all(isinstance(s, dict) for s in meta.get("skipped", [])):
        return f"{META}: skipped must be a list of objects"
    for key in ("name", "created", "source_dir", "ovi_version"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return f"{META}: {key} must be a string"
    return None


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, from its header alone."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return tuple(shape), dtype, f.tell()


def embeddings_problem(path: Path, count: int, dim: int) -> str | None:
    p = path / EMBEDDINGS
    try:
        shape, dtype, offset = npy_header(p)
    except FileNotFoundError:
        return f"{EMBEDDINGS} is missing"
    except Exception as exc:  # noqa: BLE001 - any unreadable header is a damaged file
        return f"{EMBEDDINGS} is not a readable .npy file ({first_line(exc)})"
    if dtype.kind != "f" or dtype.hasobject:
        return f"{EMBEDDINGS} holds {dtype} values, not floats"
    if shape != (count, dim):
        return f"{EMBEDDINGS} has shape {shape}, but {META} says {count} embeddings of dimension {dim}"
    need = offset + count * dim * dtype.itemsize
    size = p.stat().st_size
    if size < need:
        return f"{EMBEDDINGS} is truncated ({size} bytes, needs {need})"
    return None


def read_files(path: Path, count: int) -> list[str]:
    """The validated file list (`files.json`: a list of `count` strings)."""
    try:
        files = _read_json(path / FILES)
    except FileNotFoundError:
        raise BadStore(path, f"{FILES} is missing") from None
    except (OSError, ValueError) as exc:
        raise BadStore(path, f"{FILES} is not readable JSON ({first_line(exc)})") from None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise BadStore(path, f"{FILES} must be a JSON list of file names")
    if len(files) != count:
        raise BadStore(path, f"{FILES} names {len(files)} files, but the store holds {count} embeddings")
    return files


def index_problem(path: Path, count: int, dim: int) -> str | None:
    """The faiss header (fourcc, d int32, ntotal int64) against the store's count and dimension."""
    try:
        with open(path / INDEX, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return f"{INDEX} is missing"
    except OSError as exc:
        return f"{INDEX} is not readable ({first_line(exc)})"
    if len(head) < 16:
        return f"{INDEX} is truncated ({len(head)} bytes)"
    d, ntotal = struct.unpack("<iq", head[4:16])
    if d != dim or ntotal != count:
        return (f"{INDEX} holds {ntotal} vectors of dimension {d}, but the store holds {count} of dimension "
                f"{dim} (an index from another store?)")
    return None


def read_moments(path: Path, count: int, dim: int) -> dict[str, Any]:
    """The validated moments (`moments.safetensors`): every tensor present, shaped and finite."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / MOMENTS))
    except FileNotFoundError:
        raise BadStore(path, f"{MOMENTS} is missing") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends: a damaged file
        raise BadStore(path, f"{MOMENTS} is not readable ({first_line(exc)})") from None
    for key, dims in MOMENT_SHAPES.items():
        if key not in tensors:
            raise BadStore(path, f"{MOMENTS} has no {key!r}")
        want = tuple(dim for _ in dims)
        if tuple(tensors[key].shape) != want:
            raise BadStore(path, f"{MOMENTS}: {key} has shape {tuple(tensors[key].shape)}, expected {want}")
        if not tensors[key].dtype.is_floating_point and key != "count":
            raise BadStore(path, f"{MOMENTS}: {key} is {tensors[key].dtype}, not floating point")
        if key != "count" and not np.isfinite(tensors[key].numpy()).all():  # numpy: 30x faster than torch here
            raise BadStore(path, f"{MOMENTS}: {key} holds NaN or infinite values")
    if int(tensors["count"]) != count:
        raise BadStore(path, f"{MOMENTS} counts {int(tensors['count'])} embeddings, {META} says {count}")
    if not math.isfinite(float(tensors["shrinkage"])):
        raise BadStore(path, f"{MOMENTS}: shrinkage is not finite")
    return tensors
