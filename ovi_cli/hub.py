"""Turning a model argument (hub id or local folder) into a local folder, without silent hangs.

Every loader in ovi reads from a local folder in the hub repository's own layout. A hub id is
first looked up in the local Hugging Face cache; only if it is missing there do we go to the
network, and only after a quick reachability probe, because a hub request on a machine without
network retries for minutes before failing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from ovi_cli.errors import OviError

DEFAULT_ENDPOINT = "https://huggingface.co"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class ModelRef:
    """A model a command needs: `source` (hub id or folder), what it is, and the flag that sets it."""

    source: str
    what: str
    flag: str
    subfolders: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # the only files to fetch from the hub, when the model is a few files of a big repo


class ModelUnavailable(OviError):
    """A model is neither a local folder nor in the hub cache, and cannot be downloaded now."""

    def __init__(self, ref: ModelRef, reason: str) -> None:
        self.ref, self.reason = ref, reason
        super().__init__(f"{ref.what} model {ref.source!r} {reason}: {advice(ref)}")


def advice(ref: ModelRef) -> str:
    return (f"download it where there is network (`hf download {ref.source} --local-dir DIR`), "
            f"copy DIR here and pass {ref.flag} DIR")


def check_models(refs: Sequence[ModelRef], toy_hint: bool = True) -> None:
    """Resolve every model a command needs before loading any; name all missing ones in one line.

    `toy_hint`: end with the advice to try `--model toy` (not for models the toy world has no stand-in for).
    """
    missing: list[ModelUnavailable] = []
    for ref in dict.fromkeys(refs):
        try:
            resolve_model_dir(ref.source, what=ref.what, flag=ref.flag, subfolders=ref.subfolders, files=ref.files)
        except ModelUnavailable as exc:
            missing.append(exc)
    hint = "; or try ovi offline right away with --model toy" if toy_hint else ""
    if len(missing) == 1:
        raise OviError(f"{missing[0]}{hint}")
    if missing:
        names = "; ".join(f"{m.ref.what} {m.ref.source!r} (then {m.ref.flag} DIR)" for m in missing)
        raise OviError(f"models not available here ({missing[0].reason}): {names}; download each where there "
                       f"is network with `hf download ID --local-dir DIR` and copy it here{hint}")


def quiet_hf_libraries() -> None:
    """transformers and diffusers log and draw bars of their own; ovi shows its own progress instead."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        for log in (tlog, dlog):
            log.set_verbosity_error()
            log.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks must never break a run
        pass


@lru_cache(maxsize=1)
def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT))
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_dir(
    source: str,
    *,
    what: str,
    flag: str,
    subfolders: Sequence[str] = (),
    files: Sequence[str] = (),
) -> Path:
    """Return a local folder for `source` (hub id or path) that holds `subfolders` (and `files`).

    `files` (paths inside the repository): fetch only these from the hub, e.g. one adapter's
    weights from a repository of many.

    `what` names the model in messages ("encoders", "decoder"), `flag` the CLI flag that
    chooses it, so that the error tells the user what to do instead.
    """
    quiet_hf_libraries()
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OviError(f"{what} model {source!r} is a file, not a folder in the hub layout")
        _check_subfolders(path, subfolders, what, source, files)
        return path
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise OviError(f"{what} model folder {source!r} does not exist (pass a folder or a hub id to {flag})")

    patterns = list(files) if files else [f"{s}/*" for s in subfolders] + ["model_index.json"] if subfolders else None
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(source, allow_patterns=patterns, local_files_only=True)
        _check_subfolders(Path(local), subfolders, what, source, files)
        return Path(local)
    except OviError:
        pass
    except Exception:  # not in the cache (the exception type differs across huggingface_hub versions)
        pass

    ref = ModelRef(source, what, flag, tuple(subfolders))
    if _offline():
        raise ModelUnavailable(ref, "is neither a local folder nor in the hub cache, and HF_HUB_OFFLINE is set")
    if not _hub_reachable():
        raise ModelUnavailable(ref, "is not in the hub cache and the Hugging Face hub cannot be reached")
    try:
        local = snapshot_download(source, allow_patterns=patterns)
    except Exception as exc:  # network and authorisation errors from the hub client
        raise ModelUnavailable(ref, f"could not be downloaded ({type(exc).__name__})") from exc
    _check_subfolders(Path(local), subfolders, what, source, files)
    return Path(local)


def _check_subfolders(path: Path, subfolders: Sequence[str], what: str, source: str,
                      files: Sequence[str] = ()) -> None:
    missing = [s for s in subfolders if not (path / s).is_dir()]
    missing += [f for f in files if not (path / f).is_file()]
    if missing:
        raise OviError(
            f"{what} model {source!r} lacks {'' if files else 'the subfolder(s) '}{', '.join(missing)} "
            f"(expected the layout of the hub repository)"
        )
