"""Command-line options shared by several commands (`gen`, `compare`, `build-stats`), declared once.

Each alias is a Typer-annotated type; a command writes `tokens: options.Tokens = GenSettings.tokens`,
so flag name, help text and default are the same everywhere.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ovi_cli.schedule import SCHEDULES

EncoderModel = Annotated[str, typer.Option(
    envvar="OVI_ENCODER_MODEL",
    help="Hub id or local folder in the kandinsky-2-2-prior layout (CLIP towers).")]
DecoderModel = Annotated[str, typer.Option(
    envvar="OVI_DECODER_MODEL", help="Hub id or local folder in the kandinsky-2-2-decoder layout.")]
Tokens = Annotated[int, typer.Option(help="Number of OVI pseudo-tokens.")]
Steps = Annotated[int | None, typer.Option(help="OVI optimisation steps (default: the schedule's, "
    + ", ".join(f"{k} {v.steps}" for k, v in SCHEDULES.items()) + ").", show_default=False)]
Schedule = Annotated[str, typer.Option(help="OVI learning-rate schedule: paper (the paper's constant lr) "
    "or fast (warm-up + cosine decay, same result in a third of the steps; see docs/speed.md).")]
Lr = Annotated[float, typer.Option(help="OVI AdamW learning rate.")]
WeightDecay = Annotated[float, typer.Option(help="OVI AdamW weight decay.")]
NnEvery = Annotated[int, typer.Option(
    help="nn constraint: search the index every K steps (neighbours are reused between).")]
NnK = Annotated[int, typer.Option(help="nn constraint: neighbours per search (mean of their terms).")]
PriorSteps = Annotated[int, typer.Option(help="kandinsky prior: denoising steps.")]
PriorGuidance = Annotated[float, typer.Option(help="kandinsky prior: guidance scale.")]
Negative = Annotated[str, typer.Option(
    help="Negative image embedding: zero-image (embedding of a mean-grey image) or zeros.")]
Height = Annotated[int, typer.Option(help="Image height in pixels.")]
Width = Annotated[int, typer.Option(help="Image width in pixels.")]
DecoderSteps = Annotated[int, typer.Option(help="Decoder denoising steps.")]
GuidanceScale = Annotated[float, typer.Option(help="Decoder classifier-free guidance scale.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda | mps")]
Dtype = Annotated[str, typer.Option(
    help="auto | float32 | bfloat16 | float16 (auto: bfloat16 on CUDA, float32 elsewhere; OVI's loop "
    "also uses bfloat16 on CPUs with native bf16).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
