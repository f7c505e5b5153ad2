"""Many processes on the launchers people already use: torchrun (and so `accelerate launch`, SLURM +
torchrun), or `--shard I/N` for separate jobs (SLURM arrays, separate machines).

- `launch_from_env()` reads torchrun's `RANK`, `WORLD_SIZE` and `LOCAL_RANK` (none set: one process).
- `work_share(shard, launch)` is this process's share of the work: torchrun's ranks inside `--shard I/N`,
  so a SLURM array of N jobs each running torchrun with W processes is N * W disjoint shares.
- `device_for(requested, launch)`: `auto`/`cuda` become `cuda:LOCAL_RANK` under torchrun.
- `process_group(launch, device)`: the torch process group, only when WORLD_SIZE > 1 (gloo on the CPU,
  nccl on CUDA), with `barrier()` for "rank 0 writes the shared files once every rank is done".

Everything here but the process group is pure (no torch at import).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from ovi_cli.errors import OviError


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`"I/N"` (1-based, 1 <= I <= N) -> (I, N); None -> None."""
    if text is None:
        return None
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise OviError(f"--shard must look like I/N (e.g. 1/4), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise OviError(f"--shard {text}: need 1 <= I <= N")
    return i, n

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
# A barrier waits for the slowest rank: a benchmark share can take hours longer than another's.
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass(frozen=True)
class Launch:
    """Where this process stands among the processes a launcher started (one process: 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (or a launcher that sets its variables)

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes what all processes share."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str) -> int:
    text = env.get(name, "").strip()
    try:
        return int(text)
    except ValueError:
        raise OviError(f"environment variable {name}={text!r} is not a whole number (set by torchrun)") from None


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch:
    """The launch torchrun describes in `env` (default `os.environ`); no `WORLD_SIZE`: one process."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return Launch()
    world = _env_int(env, "WORLD_SIZE")
    rank = _env_int(env, "RANK") if "RANK" in env else 0
    local = _env_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank
    if world < 1 or not 0 <= rank < world or local < 0:
        raise OviError(f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return Launch(rank, world, local, launched=True)


@dataclass(frozen=True)
class Share:
    """This process's share of the work: the units `u` with `u % count == index` (round robin)."""

    index: int = 0  # 0-based
    count: int = 1

    def owns(self, unit: int, offset: int = 0) -> bool:
        return (unit + offset) % self.count == self.index

    @property
    def label(self) -> str:
        """`part-00001-of-00004`: a file-name part unique to this share."""
        return f"part-{self.index + 1:05d}-of-{self.count:05d}"

    @property
    def everything(self) -> bool:
        return self.count == 1


def work_share(shard: tuple[int, int] | None, launch: Launch) -> Share:
    """`--shard I/N` split again among torchrun's W ranks: share `(I-1)*W + rank` of `N*W`."""
    i, n = shard or (1, 1)
    return Share((i - 1) * launch.world_size + launch.rank, n * launch.world_size)


def stable_offset(key: str) -> int:
    """A per-key offset that is the same in every process and on every run (Python's `hash` is not)."""
    return zlib.crc32(key.encode("utf-8"))


def device_for(requested: str, launch: Launch, cuda_devices: int) -> str:
    """The `--device` of this process: under torchrun `auto`/`cuda` are `cuda:LOCAL_RANK`.

    With one visible GPU per process (e.g. SLURM's `--gpus-per-task=1`) that GPU is `cuda:0`.
    """
    name = requested.lower()
    if not launch.launched or cuda_devices == 0 or name not in ("auto", "cuda") and not name.startswith("cuda:"):
        return requested
    if name.startswith("cuda:"):
        if launch.distributed:
            raise OviError(f"--device {requested}: under torchrun each process uses cuda:LOCAL_RANK; "
                           "pass --device cuda (or auto)")
        return requested
    if cuda_devices == 1:
        return "cuda:0"
    if launch.local_rank >= cuda_devices:
        raise OviError(f"LOCAL_RANK {launch.local_rank} but only {cuda_devices} GPUs are visible: start at most "
                       f"{cuda_devices} processes per node (torchrun --nproc-per-node)")
    return f"cuda:{launch.local_rank}"


def cuda_device_count() -> int:
    """GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def init_process_group(launch: Launch, device: str) -> bool:
    """Join torchrun's process group when WORLD_SIZE > 1; True when this call created it."""
    if not launch.distributed:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    try:
        dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
    except (RuntimeError, ValueError) as exc:
        raise OviError(f"cannot join the process group ({backend}, rank {launch.rank} of {launch.world_size}): "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    return True


def barrier(launch: Launch) -> None:
    """Wait for every rank (a no-op for one process)."""
    if not launch.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


@contextmanager
def process_group(launch: Launch, device: str) -> Iterator[None]:
    """The process group for the duration of a command (nothing for one process)."""
    created = init_process_group(launch, device)
    try:
        yield
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
