"""Choosing the torch device and the compute dtype from the `--device` / `--dtype` flags.

One dtype policy (`resolve_dtype`) for everything: the pipeline asks it for the towers' dtype,
the OVI prior asks it (with the vision tower's width) for OVI's loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ovi_cli.errors import OviError

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# `--dtype auto` for OVI's loop on a CPU: bfloat16 only where the CPU computes bf16 natively and
# the vision tower is wide enough for that to pay off (measured on AMD EPYC / AVX512-BF16: slower
# at width 32-128, 1.2-2.6x faster from width 256 up); float32 otherwise.
CPU_BF16_MIN_WIDTH = 256
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


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


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True where the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in CPU_BF16_FLAGS)


def resolve_dtype(
    name: str,
    device: torch.device | str,
    *,
    ovi_token_width: int | None = None,
    flags: set[str] | None = None,
) -> torch.dtype:
    """The compute dtype (autocast) for `--dtype NAME` on `device`: the one policy of ovi.

    An explicit name is that dtype. `auto`:
    - CUDA: bfloat16 (the towers' weights are loaded in it, autocast does the rest);
    - MPS: float32;
    - CPU: float32 for the towers' own encodings (text, images: results do not depend on the CPU);
      for OVI's loop (`ovi_token_width` = the vision tower's width) bfloat16 where the CPU computes
      bf16 natively (`flags`: default the CPU's own) and the tower is at least
      `CPU_BF16_MIN_WIDTH` wide, float32 otherwise.
    """
    name = name.lower()
    device = torch.device(device)
    if name != "auto":
        if name not in DTYPES:
            raise OviError(f"unknown dtype {name!r}; choose one of auto, {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16
    if (device.type == "cpu" and ovi_token_width is not None and ovi_token_width >= CPU_BF16_MIN_WIDTH
            and cpu_has_native_bf16(flags)):
        return torch.bfloat16
    return torch.float32


def weight_dtype(device: torch.device | str, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype model weights are loaded in: the one rule of ovi.

    float32 on a CPU (its half-precision matmuls are slow or missing; autocast or a bf16 copy does
    the rest where that pays), the compute dtype on an accelerator (half the memory).
    """
    if torch.device(device).type == "cpu" or dtype is None:
        return torch.float32
    return dtype


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Autocast for a low-precision dtype; a no-op context for float32."""
    if dtype == torch.float32:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)
