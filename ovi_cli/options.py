"""Command-line options shared by several commands, declared once.

Each alias is a Typer-annotated type. The run flags that `gen`, `compare` and `bench generate`
share are declared once, as the parameters of `run_flags` (defaults from `GenSettings`); the
commands mount them with `ovi_cli.commands.common.RunCommand`, which also mounts every registered
plugin's own flag aliases (`PluginOption(flag=...)`). Help panels group the flags of these long
commands the same way.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ovi_cli.schedule import SCHEDULES
from ovi_cli.settings import GenSettings

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


def run_flags(
    model: Model = None,
    prior: Prior = GenSettings.prior,
    decoder: Decoder = GenSettings.decoder,
    encoder_model: EncoderModel = GenSettings.encoder_model,
    encoder_family: EncoderFamily = GenSettings.encoder_family,
    decoder_model: DecoderModel = GenSettings.decoder_model,
    tokens: Tokens = GenSettings.tokens,
    steps: Steps = GenSettings.steps,
    schedule: Schedule = GenSettings.schedule,
    lr: Lr = GenSettings.lr,
    weight_decay: WeightDecay = GenSettings.weight_decay,
    patience: Patience = GenSettings.patience,
    min_delta: MinDelta = GenSettings.min_delta,
    constraint: Constraint = None,
    stats: Stats = None,
    option: Option = None,
    negative: Negative = GenSettings.negative,
    height: Height = GenSettings.height,
    width: Width = GenSettings.width,
    decoder_steps: DecoderSteps = GenSettings.decoder_steps,
    guidance_scale: GuidanceScale = GenSettings.guidance_scale,
    device: Device = GenSettings.device,
    dtype: Dtype = GenSettings.dtype,
    compile: Compile = False,
    quiet: Quiet = False,
) -> None:
    """THE declaration of the run flags `gen`, `compare` and `bench generate` share (never called:
    Typer reads its parameters). A command leaves out those it does not take, or declares its own."""
