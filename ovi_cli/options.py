"""Command-line options shared by several commands, declared once.

Each alias is a Typer-annotated type; a command writes `tokens: options.Tokens = GenSettings.tokens`,
so flag name, help text and default are the same everywhere. Help panels group the flags of the
long commands (`gen`, `compare`, `bench generate`) the same way.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ovi_cli.schedule import SCHEDULES

MODELS = "Models"
OVI = "OVI"
CONSTRAINTS = "Constraints"
PLUGIN_OPTIONS = "Plugin options"
DECODING = "Decoding"
RUN = "Execution"
OUTPUT = "Output"

EncoderModel = Annotated[str, typer.Option(
    envvar="OVI_ENCODER_MODEL", rich_help_panel=MODELS,
    help="Hub id or local folder in the kandinsky-2-2-prior layout (CLIP towers).")]
EncoderFamily = Annotated[str, typer.Option(
    rich_help_panel=MODELS,
    help="How --encoder-model is laid out (an encoder family): kandinsky22-prior, or clip (a plain CLIP model "
    "folder such as laion/CLIP-ViT-H-14-laion2B-s32B-b79K). Model presets set it.")]
DecoderModel = Annotated[str, typer.Option(
    envvar="OVI_DECODER_MODEL", rich_help_panel=MODELS,
    help="Hub id or local folder in the kandinsky-2-2-decoder layout.")]
Model = Annotated[str | None, typer.Option(
    "--model", rich_help_panel=MODELS,
    help="Model preset from a plugin, e.g. `toy` (the shipped toy world: offline, seconds on a CPU); "
    "flags given explicitly still win. `ovi plugins` lists the presets.")]
Prior = Annotated[str, typer.Option(
    rich_help_panel=MODELS, help="Prior plugin: ovi, textemb, eclipse, kandinsky, toy-prior, ... (`ovi plugins`).")]
Decoder = Annotated[str, typer.Option(
    rich_help_panel=MODELS, help="Decoder plugin: kandinsky22, toy (--model toy), or embeds (no image).")]

Tokens = Annotated[int, typer.Option(rich_help_panel=OVI, help="Number of OVI pseudo-tokens.")]
Steps = Annotated[int | None, typer.Option(
    rich_help_panel=OVI, show_default=False,
    help="OVI optimisation steps (default: the schedule's: "
    + ", ".join(f"{k} {v.steps}" for k, v in SCHEDULES.items()) + ").")]
Schedule = Annotated[str, typer.Option(
    rich_help_panel=OVI, help="OVI learning-rate schedule: " + " | ".join(SCHEDULES) + " (paper: the paper's "
    "constant lr; fast: warm-up, 3x lr held, cosine tail, Adam beta2 0.9: the same embedding in a third of "
    "the steps, see docs/speed.md).")]
Lr = Annotated[float, typer.Option(rich_help_panel=OVI, help="OVI AdamW learning rate.")]
WeightDecay = Annotated[float, typer.Option(rich_help_panel=OVI, help="OVI AdamW weight decay.")]
Patience = Annotated[int, typer.Option(
    rich_help_panel=OVI,
    help="Early stopping: stop a prompt after this many steps without the objective improving "
    "by --min-delta, checked every 10 steps (0 = run all --steps, the paper's setting).")]
MinDelta = Annotated[float, typer.Option(rich_help_panel=OVI, help="Smallest improvement that resets --patience.")]

Constraint = Annotated[list[str] | None, typer.Option(
    "--constraint", "-c", rich_help_panel=CONSTRAINTS, metavar="NAME[:WEIGHT]",
    help="OVI constraint NAME[:WEIGHT], repeatable: mahalanobis, nn, ... (`ovi plugins`).")]
Stats = Annotated[str | None, typer.Option(
    rich_help_panel=CONSTRAINTS,
    help="Statistics store (name or folder) for constraints; default: the newest one built with the same "
    "encoder.")]

Option = Annotated[list[str] | None, typer.Option(
    "--option", "-O", rich_help_panel=PLUGIN_OPTIONS, metavar="PLUGIN.KEY=VALUE",
    help="An option of a prior, constraint or decoder plugin, repeatable: nn.k=3, nn.every=5, "
    "eclipse.model=DIR, kandinsky.steps=25 ... (`ovi plugins --options` lists them).")]
NnEvery = Annotated[int | None, typer.Option(
    rich_help_panel=PLUGIN_OPTIONS, help="Alias of --option nn.every=E.", show_default=False)]
NnK = Annotated[int | None, typer.Option(
    rich_help_panel=PLUGIN_OPTIONS, help="Alias of --option nn.k=K.", show_default=False)]
PriorModel = Annotated[str | None, typer.Option(
    rich_help_panel=PLUGIN_OPTIONS, show_default=False,
    help="Alias of --option PRIOR.model=M for the chosen --prior (eclipse, kandinsky, toy-prior).")]
PriorSteps = Annotated[int | None, typer.Option(
    rich_help_panel=PLUGIN_OPTIONS, help="Alias of --option kandinsky.steps=N.", show_default=False)]
PriorGuidance = Annotated[float | None, typer.Option(
    rich_help_panel=PLUGIN_OPTIONS, help="Alias of --option kandinsky.guidance=G.", show_default=False)]

Negative = Annotated[str, typer.Option(
    rich_help_panel=DECODING, help="Negative image embedding: zero-image (embedding of a mean-grey image) or zeros.")]
Height = Annotated[int, typer.Option(rich_help_panel=DECODING, help="Image height in pixels.")]
Width = Annotated[int, typer.Option(rich_help_panel=DECODING, help="Image width in pixels.")]
DecoderSteps = Annotated[int, typer.Option(rich_help_panel=DECODING, help="Decoder denoising steps.")]
GuidanceScale = Annotated[float, typer.Option(rich_help_panel=DECODING, help="Decoder classifier-free guidance scale.")]

Device = Annotated[str, typer.Option(rich_help_panel=RUN, help="auto | cpu | cuda | cuda:N | mps")]
Dtype = Annotated[str, typer.Option(
    rich_help_panel=RUN,
    help="auto | float32 | bfloat16 | float16 (auto: bfloat16 on CUDA, float32 elsewhere; OVI's loop "
    "also uses bfloat16 on CPUs with native bf16).")]
Compile = Annotated[bool, typer.Option(
    "--compile", rich_help_panel=RUN, help="torch.compile the OVI step where it works (falls back with a message).")]

Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT, help="No progress output.")]
Json = Annotated[bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Print the results as JSON on stdout.")]
Plot = Annotated[bool, typer.Option(
    "--plot", rich_help_panel=OUTPUT,
    help="Also write a plot of the cosine over OVI steps (and constraint terms) and its raw values (CSV).")]
