"""The settings of one `ovi gen` run, shared by the CLI, the library and the plugins.

Light on purpose (no torch): the commands read their defaults from here before any model loads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_ENCODER_MODEL = "kandinsky-community/kandinsky-2-2-prior"
DEFAULT_DECODER_MODEL = "kandinsky-community/kandinsky-2-2-decoder"
NEGATIVE_KINDS = ("zero-image", "zeros")


@dataclass
class GenSettings:
    prior: str = "ovi"
    decoder: str = "kandinsky22"
    encoder_model: str = DEFAULT_ENCODER_MODEL
    decoder_model: str = DEFAULT_DECODER_MODEL
    # OVI
    tokens: int = 6
    steps: int = 500
    lr: float = 2e-2
    weight_decay: float = 0.01
    patience: int = 0
    min_delta: float = 1e-4
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
    compile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """Every number finite and in range (one-line `OviError`s), before anything loads."""
        from ovi_cli import checks
        from ovi_cli.api import ConstraintSpec

        checks.check_int(self.tokens, "--tokens", minimum=1, maximum=checks.MAX_TOKENS)
        checks.check_int(self.steps, "--steps", minimum=1, maximum=checks.MAX_STEPS)
        checks.check_float(self.lr, "--lr", above=0)
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
