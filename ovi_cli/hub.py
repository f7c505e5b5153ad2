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
from pathlib import Path
from urllib.parse import urlparse

from ovi_cli.errors import OviError

DEFAULT_ENDPOINT = "https://huggingface.co"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


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
) -> Path:
    """Return a local folder for `source` (hub id or path) that holds `subfolders`.

    `what` names the model in messages ("encoders", "decoder"), `flag` the CLI flag that
    chooses it, so that the error tells the user what to do instead.
    """
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OviError(f"{what} model {source!r} is a file, not a folder in the hub layout")
        _check_subfolders(path, subfolders, what, source)
        return path
    if source.count("/") != 1 or source.startswith((".", "/", "~")):
        raise OviError(f"{what} model folder {source!r} does not exist (pass a folder or a hub id to {flag})")

    patterns = [f"{s}/*" for s in subfolders] + ["model_index.json"] if subfolders else None
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(source, allow_patterns=patterns, local_files_only=True)
        _check_subfolders(Path(local), subfolders, what, source)
        return Path(local)
    except OviError:
        pass
    except Exception:  # not in the cache (the exception type differs across huggingface_hub versions)
        pass

    advice = (
        f"download it where there is network (`hf download {source} --local-dir DIR`), "
        f"copy DIR here and pass {flag} DIR"
    )
    if _offline():
        raise OviError(
            f"{what} model {source!r} is neither a local folder nor in the hub cache, and HF_HUB_OFFLINE "
            f"is set: {advice}"
        )
    if not _hub_reachable():
        raise OviError(f"cannot reach the Hugging Face hub to download {what} model {source!r}: {advice}")
    try:
        local = snapshot_download(source, allow_patterns=patterns)
    except Exception as exc:  # network and authorisation errors from the hub client
        raise OviError(f"downloading {what} model {source!r} failed ({type(exc).__name__}): {advice}") from exc
    _check_subfolders(Path(local), subfolders, what, source)
    return Path(local)


def _check_subfolders(path: Path, subfolders: Sequence[str], what: str, source: str) -> None:
    missing = [s for s in subfolders if not (path / s).is_dir()]
    if missing:
        raise OviError(
            f"{what} model {source!r} lacks the subfolder(s) {', '.join(missing)} "
            f"(expected the layout of the hub repository)"
        )
