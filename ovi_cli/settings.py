"""The settings of one `ovi gen` run, shared by the CLI, the library and the plugins.

`OviSettings` holds OVI's optimiser settings, with their defaults, once; `GenSettings` (a whole
`gen` run) extends it, so the OVI prior passes a run's settings to the engine as they are.

Light on purpose (no torch): the commands read their defaults from here before any model loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ovi_cli.errors import OviError
from ovi_cli.schedule import DEFAULT_SCHEDULE, Schedule, get_schedule

DEFAULT_ENCODER_MODEL = "kandinsky-community/kandinsky-2-2-prior"
DEFAULT_DECODER_MODEL = "kandinsky-community/kandinsky-2-2-decoder"
# the Kandinsky 2.2 prior repository's CLIP subfolders (the `kandinsky22-prior` encoder family's layout)
ENCODER_SUBFOLDERS = ("image_encoder", "text_encoder", "tokenizer", "image_processor")
DEFAULT_ENCODER_FAMILY = "kandinsky22-prior"  # how the CLIP towers load (`ovi_cli.api.EncoderFamily`)
NEGATIVE_KINDS = ("zero-image", "zeros")


@dataclass
class ConstraintSpec:
    """A constraint as named on the command line: `NAME[:WEIGHT]`."""

    name: str
    weight: float | None = None  # None: the constraint's default weight

    @classmethod
    def parse(cls, text: str) -> ConstraintSpec:
        name, sep, weight = text.strip().partition(":")
        if not name or (sep and not weight):
            raise OviError(f"malformed --constraint {text!r}: expected NAME or NAME:WEIGHT")
        if not sep:
            return cls(name)
        try:
            value = float(weight)
        except ValueError:
            raise OviError(f"malformed --constraint {text!r}: weight {weight!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise OviError(f"malformed --constraint {text!r}: weight must be a finite number >= 0")
        return cls(name, value)


@dataclass
class OviSettings:
    """OVI hyper-parameters; the `paper` schedule's defaults follow the paper and its reference code.

    `steps=None` takes the schedule's own step count (paper 500, fast: see `ovi_cli.schedule`);
    it is resolved when the settings are made, so `steps` is always a number afterwards.
    """

    tokens: int = 6
    steps: int | None = None  # None: the schedule's step count
    lr: float = 2e-2  # the schedule's peak is `peak_factor * lr`
    weight_decay: float = 0.01
    schedule: str | Schedule = DEFAULT_SCHEDULE  # "paper" | "fast" (or a `Schedule`)
    init_std: float = 0.02
    patience: int = 0  # stop a prompt after this many steps without improvement; 0 = never
    min_delta: float = 1e-4  # what counts as an improvement of the objective
    sync_every: int = 10  # device-to-host copies (progress, early stopping) every K steps
    compile: bool = False  # torch.compile the forward (falls back to eager with a warning)

    def __post_init__(self) -> None:
        try:
            schedule = get_schedule(self.schedule)
        except ValueError as exc:
            raise OviError(f"--schedule: {exc}") from None
        if self.steps is None:
            self.steps = schedule.steps


@dataclass
class GenSettings(OviSettings):
    """One `gen` run: OVI's settings (inherited) and everything around them."""

    prior: str = "ovi"
    decoder: str = "kandinsky22"
    encoder_model: str = DEFAULT_ENCODER_MODEL
    encoder_family: str = DEFAULT_ENCODER_FAMILY  # the layout `encoder_model` is read in (a registered family)
    decoder_model: str = DEFAULT_DECODER_MODEL
    seed: int = 0
    constraints: list[str] = field(default_factory=list)  # "NAME[:WEIGHT]"
    stats: str | None = None
    # plugin-owned options, by plugin name: {"nn": {"k": 3}, "eclipse": {"model": "DIR"}};
    # each plugin declares and checks its own (`ovi_cli.api.PluginOption`)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # decoding
    negative: str = "zero-image"
    height: int = 512
    width: int = 512
    decoder_steps: int = 50
    guidance_scale: float = 4.0
    # execution
    device: str = "auto"
    dtype: str = "auto"
    batch: int = 1  # prompts (bench: images or prompts) optimised together: batch shapes change float rounding

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # a `Schedule` object becomes a dict of its fields

    def check(self) -> None:
        """Every number finite and in range (one-line `OviError`s), before anything loads."""
        from ovi_cli import checks

        checks.check_int(self.tokens, "--tokens", minimum=1, maximum=checks.MAX_TOKENS)
        checks.check_int(self.steps, "--steps", minimum=1, maximum=checks.MAX_STEPS)
        checks.check_float(self.lr, "--lr", above=0, maximum=checks.MAX_LR)
        checks.check_float(self.weight_decay, "--weight-decay", minimum=0)
        checks.check_int(self.patience, "--patience", minimum=0, maximum=checks.MAX_STEPS)
        checks.check_float(self.min_delta, "--min-delta", minimum=0)
        checks.check_seed(self.seed)
        checks.check_int(self.height, "--height", minimum=1, maximum=checks.MAX_SIDE)
        checks.check_int(self.width, "--width", minimum=1, maximum=checks.MAX_SIDE)
        checks.check_int(self.decoder_steps, "--decoder-steps", minimum=1, maximum=checks.MAX_STEPS)
        checks.check_float(self.guidance_scale, "--guidance-scale", minimum=0)
        for text in self.constraints:
            spec = ConstraintSpec.parse(text)
            if spec.weight is not None:
                checks.check_float(spec.weight, f"--constraint {text}: the weight", minimum=0,
                                   maximum=checks.MAX_WEIGHT)

    def options_for(self, plugin: str) -> dict[str, Any]:
        """What the user set for `plugin` (no defaults: those come from the plugin)."""
        return dict(self.options.get(plugin, {}))
