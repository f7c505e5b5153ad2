"""What every diffusers-pipeline decoder does the same way: load the pipeline from a hub id or a folder,
check the image size, seed one generator per image, report the steps, pass the prompts.

Used by `kandinsky22` and its task decoders, `sd21-unclip` and `sdxl-ip-adapter`. Light on import:
torch and diffusers load inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import resolve_model_dir


def load_pipeline(pipeline_class: str, source: str, *, what: str, flag: str, subfolders: tuple[str, ...],
                  weight_dtype: Any) -> Any:
    """`diffusers.<pipeline_class>.from_pretrained` from a hub id or a folder, its progress bar off.

    Weights in `weight_dtype` (the plugin context's one rule); a load failure is one line naming `source`.
    """
    import diffusers

    root = resolve_model_dir(source, what=what, flag=flag, subfolders=subfolders)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = getattr(diffusers, pipeline_class).from_pretrained(root, torch_dtype=weight_dtype)
    except (OSError, ValueError) as exc:
        raise OviError(f"cannot load the {what} from {source!r}: {first_line(exc, with_type=False)}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_size(height: int, width: int, factor: int) -> None:
    """`--height` and `--width` multiples of the decoder's latent scale `factor` (one line otherwise)."""
    if height % factor or width % factor:
        raise OviError(f"--height and --width must be multiples of {factor} for this decoder (got {height}x{width})")


def seeded_generators(device: Any, seeds: list[int]) -> list[Any]:
    """One `torch.Generator` per image, seeded (on the CPU for MPS, whose generators diffusers cannot use)."""
    import torch

    where = "cpu" if device.type == "mps" else device
    return [torch.Generator(where).manual_seed(int(seed)) for seed in seeds]


def step_end(on_step: Callable[[int, int], None] | None, total: int) -> Callable[..., Any]:
    """A `callback_on_step_end` that reports step `i + 1` of `total` and changes nothing."""
    def callback(pipe: Any, step: int, timestep: Any, values: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            on_step(step + 1, total)
        return values

    return callback


def text_prompts(prompts: list[str] | None, count: int, enabled: bool) -> list[str]:
    """The text prompts a decoder passes with the image embeddings: the run's, or blanks."""
    text = list(prompts or []) if enabled else []
    return text if len(text) == count else [""] * count
