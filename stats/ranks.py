"""`ovi build-stats` on many processes (torchrun): each rank encodes its share, rank 0 merges.

Rank r of W builds shard `(I-1)*W + r + 1` of `N*W` (`--shard I/N` given, else 1/1) into its own
store in a hidden folder beside the target (`.NAME.ranks/shard-K-of-M`), with the usual
checkpoints (`--resume` continues each rank's build, and reuses a rank store that finished before
an interruption). After a barrier, rank 0 merges the rank stores with `merge_stores` (moments
combined exactly, embeddings concatenated in file order), builds the index, and removes the
rank stores. The process group itself is the caller's (this module never imports ovi_cli's).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from ovi_cli.errors import OviError
from ovi_stats.build import BuildResult, build_stats
from ovi_stats.index import DEFAULT_MEMORY
from ovi_stats.store import StatsStore, is_store, merge_stores


def rank_shard(shard: tuple[int, int] | None, rank: int, world: int) -> tuple[int, int]:
    """The 1-based shard of rank `rank` of `world` inside `--shard I/N`."""
    i, n = shard or (1, 1)
    return (i - 1) * world + rank + 1, n * world


def ranks_dir(final: str | os.PathLike) -> Path:
    final = Path(final).expanduser().absolute()
    return final.with_name(f".{final.name}.ranks")


def rank_store_path(final: str | os.PathLike, sub: tuple[int, int]) -> Path:
    return ranks_dir(final) / f"shard-{sub[0]:05d}-of-{sub[1]:05d}"


def discard_rank_stores(final: str | os.PathLike) -> bool:
    """Remove `.NAME.ranks/` beside `final` once a store is complete there (e.g. a single-process
    `--resume` finished what a killed torchrun build began): its rank stores are obsolete. Only a
    folder holding nothing but rank stores, their checkpoints and locks is removed. True if removed."""
    path = ranks_dir(final)
    if path.is_symlink() or not path.is_dir():
        return False
    if not all(re.fullmatch(r"\.?shard-\d+-of-\d+(\..+)?", e.name) for e in os.scandir(path)):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()


def check_rank_store(final: str | os.PathLike, sub: tuple[int, int], *, resume: bool, force: bool) -> None:
    """Before loading anything: an unmerged rank store from an interrupted run needs --resume or --force."""
    path = rank_store_path(final, sub)
    if path.exists() and not (resume or force):
        raise OviError(f"a rank store of an interrupted multi-process build exists at {str(path)!r}: rerun with "
                       "--resume to reuse it, or --force to build it again")


def build_stats_ranked(
    source_dir,  # a folder's path or an `ovi_stats.sources.ImageSource`
    out: str | os.PathLike,
    encoders,
    *,
    rank: int,
    world: int,
    barrier: Callable[[], None],
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    force: bool = False,
    index: str = "auto",
    **build_kwargs,
) -> tuple[BuildResult | None, StatsStore | None]:
    """This rank's build, then (rank 0) the merged store at `out`: `(rank's result, merged store or None)`.

    `build_kwargs` go to `build_stats` (batch_size, limit, workers, checkpoint_seconds, on_progress, ...).
    """
    sub = rank_shard(shard, rank, world)
    path = rank_store_path(out, sub)
    check_rank_store(out, sub, resume=resume, force=force)
    result = None
    if resume and is_store(path):  # a rank store that finished before an interruption is reused
        built = StatsStore(path).meta.get("build", {})
        if built.get("shard") != list(sub) or built.get("limit") != build_kwargs.get("limit"):
            raise OviError(f"the rank store at {str(path)!r} was built with other --shard/--limit settings; "
                           "rerun with --force to build it again")
    else:
        result = build_stats(source_dir, path, encoders, shard=sub, resume=resume, force=force, index="flat",
                             **build_kwargs)
    barrier()
    if rank != 0:
        return result, None
    stores = [StatsStore(rank_store_path(out, rank_shard(shard, r, world))) for r in range(world)]
    merged = merge_stores(stores, out, index=index,
                          index_memory=build_kwargs.get("index_memory") or DEFAULT_MEMORY)
    shutil.rmtree(ranks_dir(out), ignore_errors=True)
    return result, merged
