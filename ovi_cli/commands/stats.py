"""`ovi build-stats` and `ovi stats list|info|merge` (statistics stores for the constraints).

Thin over `ovi_stats.build` and `ovi_stats.store`: parse, call the library, render.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ovi_cli import options
from ovi_cli.errors import OviError, first_line, printable
from ovi_cli.settings import DEFAULT_ENCODER_MODEL


def code_constant(module: str, name: str) -> object:
    """The literal value of `name = ...` at the top of `module`'s source, read without importing it
    (`ovi --help` must not import numpy or torch), so help texts state the numbers the code uses.
    None when the module or the assignment is not found."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))  # type: ignore[union-attr, arg-type]
    except (ImportError, AttributeError, TypeError, OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(node.value)  # type: ignore[union-attr, arg-type]
            except ValueError:
                return None
    return None


def _count(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else "?"


FLAT_MAX = code_constant("ovi_stats.index", "FLAT_MAX")
DEFAULT_BATCH_SIZE = code_constant("ovi_stats.build", "DEFAULT_BATCH_SIZE")
INDEX_HELP = ("Nearest-neighbour index: auto, flat (exact), hnsw, ivf, ivfpq or opq (compressed: candidates "
              "re-ranked exactly).")


def _auto_rules() -> str:
    """`auto`'s rules with the thresholds `ovi_stats.index` uses (read from its source, not imported)."""
    c = {k: code_constant("ovi_stats.index", k) for k in ("FLAT_MAX", "QUANTIZATION_MIN", "HNSW_M_MIN",
                                                           "IVF_FLAT_MAX", "PQ_CHOICES")}
    pq = "/".join(map(str, c["PQ_CHOICES"])) if isinstance(c["PQ_CHOICES"], tuple) else "?"
    return (f"auto: exact flat up to {_count(c['FLAT_MAX'])} images if 4*N*D bytes fit --index-memory; hnsw below "
            f"{_count(c['QUANTIZATION_MIN'])} or when M=floor((memory/(4N)-D)/2) >= {c['HNSW_M_MIN']}; ivf below "
            f"{_count(c['IVF_FLAT_MAX'])} if it fits; else opq with the largest PQ code in {pq} bytes that fits "
            "(autofaiss's rules).")


def _out_path(out: Path | None, name: str | None, default_name: str) -> Path:
    from ovi_stats.store import named_store_path

    if out is not None and name is not None:
        raise OviError("give --out PATH or --name NAME, not both")
    if out is not None:
        return out.expanduser().absolute()
    return named_store_path(name or default_name)


def _checked_target(target: Path, force: bool, inputs: list[Path], what: str) -> Path:
    """The store's path checked before any model loads: writable, and replaceable only as a store."""
    from ovi_cli.checks import check_output_folder
    from ovi_stats.store import check_store_target

    check_output_folder(target.parent, "--out")
    check_store_target(target, force=force, inputs=inputs, what=what)
    return target


def _check_index(index: str) -> str:
    from ovi_stats.index import INDEX_TYPES

    if index not in INDEX_TYPES:
        raise OviError(f"--index must be one of {', '.join(INDEX_TYPES)}, got {index!r}")
    return index


def _print_summary(store, skipped: list[dict], seconds: float | None, json_out: bool, quiet: bool) -> None:
    from ovi_cli.console import err_console, warn

    if json_out:
        typer.echo(json.dumps(store.info()))
        return
    if skipped and not quiet:
        for s in skipped[:20]:
            warn(f"skipped {s['path']}: {s['reason']}")
        if len(skipped) > 20:
            warn(f"... and {len(skipped) - 20} more skipped files (all listed by `ovi stats info {store.path}`)")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    kind = store.index_params.get("type")
    line = (f"wrote store {store.name!r}: {store.count} embeddings, {store.dim}-d, index {kind}, "
            f"{len(skipped)} files skipped{took} -> {store.path}")
    if not quiet:
        err_console.print(line, markup=False, highlight=False)
    typer.echo(str(store.path))


def build_stats(
    ctx: typer.Context,
    paths: Annotated[list[str] | None, typer.Argument(
        help="What to read: a folder of images (searched recursively); webdataset / img2dataset tar shards "
        "(a brace pattern 'shards/{00000..00099}.tar', tar files, or a folder of tars); with --from-embeddings "
        "a clip-retrieval output folder (img_emb/ + metadata/) or .npy/.safetensors embedding files.",
        show_default=False, metavar="SOURCE")] = None,
    encoder_model: options.EncoderModel = DEFAULT_ENCODER_MODEL,
    model: options.Model = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write the store to this folder (default: $OVI_HOME/stats/NAME).")] = None,
    name: Annotated[str | None, typer.Option(
        help="Name of the store under $OVI_HOME/stats (default: the image folder's name).")] = None,
    source: Annotated[str | None, typer.Option(
        "--source", help="Read SOURCE with this image source (see `ovi plugins`; default: the one that "
        "claims it: clip-retrieval, webdataset, folder, ...).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(
        help=f"Images encoded per batch (default {DEFAULT_BATCH_SIZE}; with --resume: the interrupted build's).",
        show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(
        help="Use only the first N image files (sorted paths), or the first N samples of shards.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Decoding/preprocessing worker processes (0 = in the main process; default: CPUs - 1, "
        "at most 8).")] = None,
    index: Annotated[str | None, typer.Option(
        help=INDEX_HELP + " " + _auto_rules() + " Default auto (with --resume: the interrupted build's).",
        show_default=False)] = None,
    index_memory: Annotated[str | None, typer.Option(
        "--index-memory", help="Memory budget of the index (e.g. 4GB, 512MB; binary units): what `auto` "
        "and the PQ code size fit (default 4GB).", show_default=False)] = None,
    shard: Annotated[str | None, typer.Option(
        help="Build only shard I of N (I/N, 1-based: contiguous blocks of the sorted files, of whole tar "
        "shards, or every N-th sample when there are fewer tars than N); merge shards with `ovi stats merge`.")]
    = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted build from its last "
                                         "checkpoint (refused if --limit/--shard/--batch-size/--index "
                                         "differ from it).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing store (only a folder holding an ovi "
                                        "store and nothing else), or discard an interrupted build.")] = False,
    from_embeddings: Annotated[bool, typer.Option(
        "--from-embeddings", help="SOURCE holds embeddings made with --encoder-model: a clip-retrieval output "
        "folder, or [N, D] .npy / .safetensors (tensor image_embeds/embeddings) files; no encoding.")] = False,
    file_list: Annotated[Path | None, typer.Option(
        help="With --from-embeddings FILES: names of the rows (one per line, or a .json list).")] = None,
    checkpoint_every: Annotated[float, typer.Option(
        help="Seconds between checkpoints that --resume continues from (finite, >= 0).")] = 60.0,
    device: options.Device = "auto",
    dtype: options.Dtype = "auto",
    quiet: options.Quiet = False,
    json_out: options.Json = False,
) -> None:
    """Build image statistics and a nearest-neighbour index from images (a folder, webdataset shards)
    or from embeddings (clip-retrieval's output, embedding files).

    The store is tied to the encoder that made it: build it with the encoder you generate with
    (e.g. --model toy for the toy world).
    """
    from ovi_cli.commands.common import settings_from_params
    from ovi_stats import build

    chosen = settings_from_params(ctx, model)
    encoder_model, family = chosen.encoder_model, chosen.encoder_family  # a preset may name another CLIP space
    if index is not None:
        _check_index(index)
    memory = _index_memory(index_memory)
    build.check_build_numbers(batch_size, limit, workers, checkpoint_every)
    paths = list(paths or [])
    if from_embeddings:
        if shard or resume or limit is not None:
            raise OviError("--shard, --resume and --limit apply to images, not --from-embeddings")
        if len(paths) == 1 and (source is not None or Path(paths[0]).expanduser().is_dir()):
            if file_list is not None:
                raise OviError("--file-list applies to embedding files; a clip-retrieval folder names its rows")
            src = _pick_source(paths[0], source, "embeddings")
            _build_from_embedding_source(src, encoder_model, family=family, out=out, name=name, index=index,
                                         memory=memory, force=force, json_out=json_out, quiet=quiet)
            return
        _build_from_embeddings([Path(p) for p in paths], encoder_model, family=family, out=out, name=name,
                               file_list=file_list, index=index, memory=memory, force=force, json_out=json_out,
                               quiet=quiet)
        return
    if file_list is not None:
        raise OviError("--file-list only applies with --from-embeddings")
    if not paths:
        raise OviError("give an image folder or shards (or --from-embeddings FOLDER|FILES...)")
    if len(paths) > 1 and not all(p.endswith(".tar") for p in paths):
        raise OviError("give exactly one image folder (several paths only as .tar shards)")
    from ovi_stats.sources import SourceSample  # noqa: F401 - the seam's types load light

    src = _pick_source("::".join(paths), source, "images")
    _build_from_source(src, encoder_model, family=family, out=out, name=name, shard=shard, index=index, memory=memory,
                       device=device, dtype=dtype, quiet=quiet, json_out=json_out,
                       build_kwargs=dict(batch_size=batch_size, limit=limit, workers=workers, resume=resume,
                                         force=force, checkpoint_seconds=checkpoint_every))


def _index_memory(text: str | None) -> int | None:
    from ovi_stats.index import parse_memory

    if text is None:
        return None
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise OviError(f"--index-memory: {exc}") from None


def _pick_source(spec: str, forced: str | None, yields: str):
    """The image source for `spec`: `--source NAME`, else the highest-priority one that claims it."""
    from ovi_cli.plugins import get_registry

    reg = get_registry()
    if forced is not None:
        cls = reg.get("image_source", forced)
    else:
        claiming = [e.cls for e in reg.entries["image_source"].values() if _claims(e.cls, spec)]
        if not claiming:
            if yields == "embeddings":
                raise OviError(f"{spec!r} is not an embeddings folder (clip-retrieval's img_emb/ + metadata/) that a "
                               "source reads; name one with --source (see `ovi plugins`)")
            if not Path(spec).expanduser().exists() and ".tar" not in spec:
                raise OviError(f"{spec!r} is not a folder")
            raise OviError(f"no image source reads {spec!r} (folders, webdataset .tar shards; see `ovi plugins`)")
        cls = max(claiming, key=lambda c: getattr(c, "priority", 0))
    if getattr(cls, "yields", "images") != yields:
        hint = "add --from-embeddings" if yields == "images" else "drop --from-embeddings"
        raise OviError(f"source {cls.name!r} yields {cls.yields}, not {yields}: {hint}")
    src = cls(spec, {})
    src.check()
    return src


def _claims(cls, spec: str) -> bool:
    try:
        return bool(cls.claims(spec))
    except Exception:  # noqa: BLE001 - a third-party source's bug must not hide the others
        return False


def _build_from_embedding_source(src, encoder_model: str, *, family: str, out: Path | None, name: str | None,
                                 index: str | None, memory: int | None, force: bool, json_out: bool,
                                 quiet: bool) -> None:
    """`--from-embeddings FOLDER`: a store from an embedding source (clip-retrieval), no encoding."""
    from ovi_cli.console import RichReporter, err_console, make_progress
    from ovi_cli.distributed import launch_from_env
    from ovi_cli.encoders import Encoders
    from ovi_stats import build
    from ovi_stats.index import DEFAULT_MEMORY

    if launch_from_env().distributed:
        raise OviError("--from-embeddings runs in one process, not under torchrun")
    root = Path(src.root())
    target = _checked_target(_out_path(out, name, root.name or "stats"), force, [root], "the embeddings folder")
    width = src.embedding_dim()  # from the headers, before the encoder loads
    encoders = Encoders.load(encoder_model, device="cpu", family=family)
    if width != encoders.embed_dim:
        raise OviError(f"the embeddings in {src.spec!r} are {width}-d but encoder {encoders.source!r} gives "
                       f"{encoders.embed_dim}-d embeddings")
    progress = make_progress(quiet or not err_console.is_terminal)
    with progress:
        store = build.build_from_source_embeddings(
            src, target, {"source": encoders.source, "fingerprint": encoders.fingerprint()}, dim=encoders.embed_dim,
            index=index or "auto", index_memory=memory or DEFAULT_MEMORY, force=force,
            reporter=RichReporter(progress, quiet))
    _print_summary(store, [], None, json_out, quiet)


def _build_from_embeddings(paths: list[Path], encoder_model: str, *, family: str, out: Path | None, name: str | None,
                           file_list: Path | None, index: str | None, memory: int | None, force: bool,
                           json_out: bool, quiet: bool) -> None:
    """`--from-embeddings FILES`: a store from embedding files already computed (one process, no images)."""
    from ovi_cli.distributed import launch_from_env
    from ovi_cli.encoders import Encoders
    from ovi_stats import build
    from ovi_stats.index import DEFAULT_MEMORY

    if not paths:
        raise OviError("--from-embeddings needs a clip-retrieval folder or one or more .npy/.safetensors files")
    if launch_from_env().distributed:
        raise OviError("--from-embeddings runs in one process, not under torchrun")
    target = _checked_target(_out_path(out, name, paths[0].stem), force,
                             paths + ([file_list] if file_list else []), "the input file")
    if file_list is not None:
        build.read_file_list(file_list.expanduser())  # a bad list is one line before the encoder loads
    encoders = Encoders.load(encoder_model, device="cpu", family=family)
    store = build.build_from_embeddings(
        paths, target, {"source": encoders.source, "fingerprint": encoders.fingerprint()},
        dim=encoders.embed_dim, file_list=file_list, index=index or "auto", force=force,
        index_memory=memory or DEFAULT_MEMORY,
    )
    _print_summary(store, [], None, json_out, quiet)


def _build_from_source(src, encoder_model: str, *, family: str, out: Path | None, name: str | None,
                       shard: str | None, index: str | None, memory: int | None, device: str, dtype: str,
                       quiet: bool, json_out: bool, build_kwargs: dict) -> None:
    """Encode an image source (this process's share of it under torchrun) and write the store."""
    from ovi_cli.console import RichReporter, err_console, make_progress
    from ovi_cli.devices import resolve_device, resolve_dtype
    from ovi_cli.distributed import barrier, cuda_device_count, device_for, launch_from_env, parse_shard, process_group
    from ovi_cli.encoders import Encoders
    from ovi_stats import build

    resume, force = build_kwargs["resume"], build_kwargs["force"]
    shard_t = parse_shard(shard)
    root = Path(src.root())
    default_name = (root.name if src.name == "folder" else f"{root.name}-{src.name}") or "stats"
    if shard_t:
        default_name += f"-shard{shard_t[0]}of{shard_t[1]}"
    target = _checked_target(_out_path(out, name, default_name), force, [root], "the image folder")
    launch = launch_from_env()
    if launch.distributed:
        from ovi_stats.ranks import check_rank_store, rank_shard

        check_rank_store(target, rank_shard(shard_t, launch.rank, launch.world_size), resume=resume, force=force)
    device = device_for(device, launch, cuda_device_count())
    dev = resolve_device(device)
    show = not quiet and launch.leader  # one process draws progress and prints the store
    # bars only on a terminal: in logs and pipes the summary line says it all
    progress = make_progress(not show or not err_console.is_terminal)
    kwargs = dict(build_kwargs, reporter=RichReporter(progress, quiet=not show), index_memory=memory)
    try:
        with process_group(launch, device):
            encoders = Encoders.load(encoder_model, device=dev, dtype=resolve_dtype(dtype, dev), family=family)
            with progress:
                if launch.distributed:
                    from ovi_stats.ranks import build_stats_ranked

                    result, store = build_stats_ranked(
                        src, target, encoders, rank=launch.rank, world=launch.world_size,
                        barrier=lambda: barrier(launch), shard=shard_t, index=index or "auto", **kwargs)
                else:
                    from ovi_stats.ranks import discard_rank_stores

                    result = build.build_stats(src, target, encoders, index=index, shard=shard_t, **kwargs)
                    store = result.store
                    discard_rank_stores(target)  # a killed torchrun build's rank stores: obsolete now
    except KeyboardInterrupt:
        err = OviError("interrupted: no store was written; rerun the same command with --resume to continue "
                       "from the last checkpoint")
        err.exit_code = 130  # the usual exit status after Ctrl-C
        raise err from None
    if result is not None and result.resumed_from and show:
        err_console.print(f"resumed after {result.resumed_from} files already done", markup=False)
    if not launch.distributed:
        _print_summary(store, result.skipped, result.seconds, json_out, quiet)
    elif store is not None:
        _print_summary(store, store.skipped, None, json_out, quiet)


def preset_stores(warn) -> list[tuple[str, object]]:
    """(preset name, store) for every `--model` preset that brings a statistics store (e.g. toy's);
    a preset whose store is missing or damaged is one `warn` line naming it."""
    from ovi_cli.plugins import get_registry
    from ovi_stats.store import open_store

    reg = get_registry()
    found = []
    for name in reg.names("model"):
        try:
            stats = reg.get("model", name)().overrides().get("stats")
            if stats:
                found.append((name, open_store(stats)))
        except Exception as exc:  # noqa: BLE001 - a third-party preset must not break the listing
            warn(f"model preset {name!r}: its statistics store is not usable ({first_line(exc, with_type=False)})")
    return found


def stats_list(
    json_out: options.Json = False,
) -> None:
    """List the stores ovi would use: those under $OVI_HOME/stats (newest first), then the model
    presets' own (e.g. the toy world's, used by `--model toy -c nn`)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ovi_cli.console import print_table, warn
    from ovi_stats.store import list_stores, stats_root

    rows = [("", s) for s in list_stores(warn=warn)]
    seen = {s.path.resolve() for _, s in rows}
    rows += [(p, s) for p, s in preset_stores(warn) if s.path.resolve() not in seen]
    if json_out:
        typer.echo(json.dumps([s.describe() | {"created": s.meta.get("created"), "preset": p or None}
                               for p, s in rows], indent=2))
        return
    console = Console()
    if not rows:
        console.print(f"no statistics stores in {stats_root()} (build one with `ovi build-stats DIR`)",
                      markup=False, highlight=False)
        return
    table = Table(title=f"statistics stores ({stats_root()}, and the model presets')")
    for col in ("name", "from", "count", "dim", "encoder", "fingerprint", "index", "created"):
        table.add_column(col)
    for p, s in rows:
        cells = (s.name, f"--model {p} (preset)" if p else "OVI_HOME", str(s.count), str(s.dim),
                 str(s.encoder.get("source")), s.fingerprint, str(s.index_params.get("type")),
                 str(s.meta.get("created", ""))[:19])
        table.add_row(*(Text(printable(c)) for c in cells))  # as text: a name is never markup
    print_table(table, console)


def stats_info(
    store: Annotated[str, typer.Argument(help="Store name (under $OVI_HOME/stats) or folder.")],
    json_out: options.Json = False,
) -> None:
    """Count, dim, encoder, mean norm, index and skipped files of a store."""
    from ovi_stats.store import open_store

    info = open_store(store).info()
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    enc = info["encoder"]
    lines = [
        f"store        {info['name']}",
        f"path         {info['path']}",
        f"count        {info['count']}",
        f"dim          {info['dim']}",
        f"encoder      {enc['source']} (fingerprint {enc['fingerprint']})",
        f"content      {info['content']}",
        f"mean norm    {info['mean_norm']:.6g}",
        f"shrinkage    {info['shrinkage']:.6g} (Ledoit-Wolf)",
        f"index        {info['index']}, {info['index_bytes'] / 1e6:.1f} MB, recall@10 "
        f"{_recall(info)} {json.dumps(info['index_params'])}",
        f"source       {info['source_dir']}",
        f"created      {info['created']} (ovi {info['ovi_version']}, format {info['format_version']})",
        f"skipped      {len(info['skipped'])} files",
    ]
    lines += [f"  {s['path']}: {s['reason']}" for s in info["skipped"]]
    typer.echo("\n".join(printable(line) for line in lines))  # names from disk: no raw control characters

def _recall(info: dict) -> str:
    params = info.get("index_params") or {}
    if info.get("recall_at_10") is None:
        return "not measured (store built before ovi measured it)"
    return f"{info['recall_at_10']:.3f} (on {params.get('recall_queries')} stored rows held out as queries)"


def stats_merge(
    stores: Annotated[list[str], typer.Argument(help="Two or more stores (names or folders), same encoder.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder of the merged store.")] = None,
    name: Annotated[str | None, typer.Option(help="Or: name of the merged store under $OVI_HOME/stats.")] = None,
    index: Annotated[str, typer.Option(help=INDEX_HELP + " auto: as for build-stats.")] = "auto",
    index_memory: Annotated[str | None, typer.Option(
        "--index-memory", help="Memory budget of the rebuilt index (e.g. 4GB; default 4GB).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing store at the target.")] = False,
    quiet: options.Quiet = False,
    json_out: options.Json = False,
) -> None:
    """Merge stores (e.g. shards, or stores built on separate machines) into one: moments combined exactly
    (sums), embeddings and row metadata concatenated, the index rebuilt over them."""
    from ovi_stats.store import merge_stores, open_store

    _check_index(index)
    if out is None and name is None:
        raise OviError("give --out PATH or --name NAME for the merged store")
    target = _out_path(out, name, "")
    opened = [open_store(s) for s in stores]
    _checked_target(target, force, [s.path for s in opened], "the store")
    from ovi_stats.index import DEFAULT_MEMORY

    memory = _index_memory(index_memory) or DEFAULT_MEMORY
    merged = merge_stores(opened, target, index=index, force=force, index_memory=memory)
    _print_summary(merged, merged.skipped, None, json_out, quiet)


def stats_app() -> typer.Typer:
    """`ovi stats list|info|merge`."""
    app = typer.Typer(help="Statistics stores: list, inspect, merge.", no_args_is_help=True)
    app.command("list")(stats_list)
    app.command("info")(stats_info)
    app.command("merge")(stats_merge)
    return app
