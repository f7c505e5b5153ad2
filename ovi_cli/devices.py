"""Choosing the torch device and the compute dtype from the `--device` / `--dtype` flags."""

from __future__ import annotations

import torch

from ovi_cli.errors import OviError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is not there is an error."""
    name = name.lower()
    if name not in DEVICES and not name.startswith("cuda:"):
        raise OviError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OviError(f"--device {name} was asked for but CUDA is not available on this machine")
    if name == "mps" and not _mps_available():
        raise OviError("--device mps was asked for but MPS is not available on this machine")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for autocast. `auto` is bfloat16 on CUDA and float32 elsewhere.

    Weights stay in float32 on CPU; on CUDA the heavy matmuls run under autocast in this dtype.
    """
    name = name.lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise OviError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Autocast for a low-precision dtype; a no-op context for float32."""
    if dtype == torch.float32:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)
