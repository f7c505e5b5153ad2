"""What a plugin implements: priors, constraints, decoders and model presets, and what they exchange.

A plugin registers classes (see `ovi_cli.hookspecs`); ovi instantiates them. Everything here
is plain Python: no terminal, and no torch at import time (plugins register without loading
their heavy modules, so `ovi --help` stays fast). Plugins report through the `Reporter` and the
`warn` callback they are given; they never print.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ovi_cli.errors import OviError
from ovi_cli.hub import ModelRef
from ovi_cli.reporter import Reporter  # noqa: F401 - the one progress protocol, re-exported
from ovi_cli.settings import ConstraintSpec  # noqa: F401 - re-exported: `NAME[:WEIGHT]`

if TYPE_CHECKING:
    from torch import Tensor

    from ovi_cli.encoders import Encoders, TextEncoding

# on_progress(step, total, values): values are per-prompt numbers to show, e.g. {"cos": [..]}
ProgressFn = Callable[[int, int, dict[str, list[float]]], None]

# ---- plugin options: `--option NAME.KEY=VALUE`, declared by the plugin that reads them ---------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class PluginOption:
    """One option a prior, constraint or decoder reads, set with `--option PLUGIN.KEY=VALUE`.

    `type` is `int`, `float`, `str` or `bool`; `minimum` bounds numbers (inclusive); `choices`
    restricts strings. `default` is what the plugin gets when the user says nothing. `flag`: an
    alias flag of the option (`PluginOption("k", int, 1, flag="--nn-k")`), mounted by the commands.
    """

    key: str
    type: type
    default: Any
    help: str = ""
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    # the plugin's own flag alias, e.g. "--nn-k": `gen`, `compare` and `bench generate` mount it from the
    # registry. A flag several plugins of a kind declare ("--prior-model") goes to the chosen one.
    flag: str | None = None

    def parse(self, value: Any, owner: str) -> Any:
        """`value` (text from the command line, or a Python value) checked and converted."""
        flag = f"--option {owner}.{self.key}"
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, bool):
                    out: Any = value
                elif str(value).strip().lower() in _TRUE | _FALSE:
                    out = str(value).strip().lower() in _TRUE
                else:
                    raise ValueError
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
            elif self.type is float:
                out = float(value)
                if out != out or out in (float("inf"), float("-inf")):
                    raise ValueError
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise OviError(f"{flag}: {value!r} is not a valid {self.type.__name__}") from None
        if self.minimum is not None and out < self.minimum:
            raise OviError(f"{flag} must be >= {self.minimum:g} (got {value!r})")
        if self.choices is not None and out not in self.choices:
            raise OviError(f"{flag} must be one of {', '.join(self.choices)} (got {value!r})")
        return out


def resolve_options(cls: type, owner: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options of plugin class `cls` (registered as `owner`): its defaults, then `given`.

    Unknown keys are one-line errors that list the keys the plugin declares.
    """
    declared = {o.key: o for o in getattr(cls, "options", ())}
    out = {k: o.default for k, o in declared.items()}
    for key, value in (given or {}).items():
        if key not in declared:
            known = ", ".join(f"{owner}.{k}" for k in declared) or "none"
            raise OviError(f"--option {owner}.{key}: {owner!r} has no option {key!r} (its options: {known})")
        parsed = declared[key].parse(value, owner)
        if parsed is not None:
            out[key] = parsed
    return out


def parse_option_assignments(items: list[str] | None) -> dict[str, dict[str, str]]:
    """`["nn.k=5", "eclipse.model=DIR"]` -> `{"nn": {"k": "5"}, "eclipse": {"model": "DIR"}}`."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        target, sep, value = item.partition("=")
        owner, dot, key = target.strip().partition(".")
        if not sep or not dot or not owner or not key:
            raise OviError(f"malformed --option {item!r}: expected PLUGIN.KEY=VALUE, e.g. nn.k=5")
        out.setdefault(owner, {})[key.strip()] = value
    return out


# ---- one context for every plugin kind -----------------------------------------------------------
@dataclass
class PluginContext:
    """What every plugin is constructed with, whatever its kind: `cls(context)`.

    `settings` is the run's typed settings (`GenSettings` for priors, constraints, decoders and
    encoder families; the scoring or fidelity settings for scorers, feature spaces and metrics);
    `options` are this plugin's own options, declared by it and resolved (defaults applied).
    """

    name: str = ""  # the name the plugin was selected by
    settings: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    device: Any = None  # torch.device
    dtype: Any = None  # the compute dtype (autocast); weights: `weight_dtype`
    reporter: Reporter = field(default_factory=Reporter)
    encoders: Any = None  # `ovi_cli.encoders.Encoders`, where the run has loaded them
    store: Any = None  # an `ovi_stats.store.StatsStore`, where the run opened one
    weight: float | None = None  # a constraint's weight

    def warn(self, message: str) -> None:
        """One warning line for the user (through the reporter)."""
        self.reporter.warn(message)

    @property
    def weight_dtype(self) -> Any:
        """The dtype to load weights in (`ovi_cli.devices.weight_dtype`, the one rule)."""
        from ovi_cli.devices import weight_dtype

        return weight_dtype(self.device or "cpu", self.dtype)


class Plugin(ABC):
    """What every plugin kind shares: a name, declared options, the context, the models it reads.

    Built as `cls(context)`; the declarative kinds (model presets, benchmarks) need nothing from a run,
    so ovi builds them as `cls()`, which gives them an empty context named after the class.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    options: ClassVar[tuple[PluginOption, ...]] = ()  # read from `self.options`

    def __init__(self, context: PluginContext | None = None) -> None:
        self.context = context if context is not None else PluginContext(name=getattr(self, "name", ""))
        self.options = dict(self.context.options)

    @property
    def settings(self) -> Any:
        return self.context.settings

    @property
    def device(self) -> Any:
        return self.context.device

    @property
    def dtype(self) -> Any:
        return self.context.dtype

    def required_models(self) -> list[ModelRef]:
        """The models `load` will read: checked before anything loads, so all missing ones are named once."""
        return []

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights (called once, before first use)."""


# A constraint's context is the one plugin context (its `store`, `encoders` and `weight` set).
ConstraintContext = PluginContext


class Constraint(Plugin):
    """A differentiable penalty on the image embedding, added to OVI's loss with a weight.

    OVI minimises, per prompt: `(1 - cos(e, t)) + sum_c weight_c * term_c(e)`. Built with a context
    whose `encoders` are loaded, whose `store` is open when `needs_stats`, and whose `weight` is the
    user's (`NAME:WEIGHT`) or, when None, `default_weight`.
    """

    default_weight: ClassVar[float] = 1.0
    needs_stats: ClassVar[bool] = False

    def __init__(self, context: PluginContext) -> None:
        super().__init__(context)
        self.weight = float(self.default_weight if context.weight is None else context.weight)

    @abstractmethod
    def term(self, embeds: Tensor, step: int, rows: Tensor) -> Tensor:
        """Unweighted penalty `[B]` for raw image embeddings `[B, D]` (float32), differentiable.

        `step` counts from 0 (`steps` for the final embedding); `rows` holds each row's index in
        the original batch (prompts that stopped early leave the batch), for per-prompt state.
        """

    def report(self, embeds: Tensor) -> list[dict[str, Any]]:
        """Per-prompt JSON-able facts about the final embeddings `[B, D]` for the sidecar."""
        return [{} for _ in range(embeds.shape[0])]


@dataclass
class PriorJob:
    """Everything a prior gets for one batch of prompts."""

    prompts: list[str]
    text: TextEncoding
    encoders: Encoders
    seeds: list[int]
    constraints: list[Constraint] = field(default_factory=list)
    on_progress: ProgressFn | None = None


@dataclass
class PriorOutput:
    """Image embeddings `[B, D]` (raw, at CLIP image-embedding scale) and per-prompt records."""

    image_embeds: Tensor
    records: list[dict[str, Any]]


class Prior(Plugin):
    """Text -> CLIP image embedding. Built once per run; `embed` is called once per batch of prompts."""

    uses_constraints: ClassVar[bool] = False
    # `ovi compare` draws OVI's cosine to this prior's embedding over the steps (trained priors)
    reference_in_compare: ClassVar[bool] = False

    @abstractmethod
    def embed(self, job: PriorJob) -> PriorOutput:
        """Image embeddings for `job.prompts`, one row per prompt."""


class Decoder(Plugin):
    """CLIP image embedding (+ negative embedding) -> images. `load()` is called once before `decode`."""

    produces_images: ClassVar[bool] = True
    # what the decoder uses of the run's settings, recorded in the sidecar's "decoding"
    uses_settings: ClassVar[tuple[str, ...]] = ("height", "width", "decoder_steps", "guidance_scale")
    # the encoder family (CLIP space) whose image embeddings it takes; None: any
    encoder_family: ClassVar[str | None] = None
    # True: `decode` also receives `prompts=[...]` (a decoder that reads the text too, e.g. SDXL + IP-Adapter)
    uses_prompts: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    @abstractmethod
    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """PIL images, one per row of `image_embeds` (an empty list for decoders without images)."""


class ModelPreset(Plugin):
    """A named set of models and defaults: `ovi gen --model NAME` (also compare, build-stats, bench).

    `overrides()` gives `GenSettings` fields (e.g. `encoder_model`, `decoder`, `stats`, `steps`);
    a flag the user gives explicitly always wins over them.
    """

    # `ovi compare --model NAME` without --priors: priors that work with these models (None: compare's own)
    compare_priors: ClassVar[str | None] = None

    @abstractmethod
    def overrides(self) -> dict[str, Any]:
        """`GenSettings` field -> value."""

    def activate(self) -> None:  # noqa: B027 - optional hook
        """Process-wide settings the preset needs (e.g. torch threads); called before loading models."""

    def check_prompts(self, prompts: list[str]) -> list[str]:
        """Warnings about `prompts` for these models, e.g. words a small vocabulary lacks (default: none).

        The commands show each once per run, before anything loads.
        """
        return []

# ---- scorers: `ovi bench score RUN --scorers NAME` ----------------------------------------------
@dataclass(frozen=True)
class ScoreItem:
    """One benchmark image to score: `RUN/<category>/samples/{prompt}_{NNNNNN}.png`."""

    path: Any  # pathlib.Path of the PNG
    name: str  # its file name
    prompt: str  # read back from the name with the official rule: name.split('_')[0]
    index: int  # the six-digit counter: int(name.split('_')[-1][:-4])
    category: str  # the category folder it lies in (color, spatial, complex, ...)


@dataclass
class ImageScore:
    """A scorer's number for one image (what the official result file holds) and how it got there."""

    score: float
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able: questions, P(yes), boxes, ...


@dataclass
class ScorerContext(PluginContext):
    """The plugin context of a scorer: the common fields, plus what `ovi bench score` was asked."""

    batch_size: int = 16
    nlp: str = "auto"  # noun phrases / part of speech: auto (spaCy where installed), spacy, rules
    encoder_model: str | None = None  # the CLIP towers of a `--model` preset (e.g. the toy CLIP), if one was named


class Scorer(Plugin):
    """Scores benchmark images: one number per image, averaged per category (T2I-CompBench's way).

    ovi calls `settings()` and `required_models()` before anything loads, `load()` once, then
    `score()` on batches of images of one category. `settings()` is what the numbers depend on
    (model weights, options, noun-phrase parser): a rerun with different settings is refused
    instead of mixing old and new numbers. `official_files()` writes the result files in the
    shapes the official T2I-CompBench scripts write, beside the category's `samples/`.
    """

    # categories this scorer scores when `--scorers` is not given (the paper's table: color -> blip-vqa, ...)
    categories: ClassVar[tuple[str, ...]] = ()
    # benchmarks (bench.json's "benchmark") whose every category it scores by default (e.g. the toy oracle)
    benchmarks: ClassVar[tuple[str, ...]] = ()
    # categories it cannot score, with the reason shown to the user (e.g. 3d_spatial needs depth)
    refuses: ClassVar[dict[str, str]] = {}
    # other scorers whose per-image results `score` combines (3-in-1); ovi runs them first
    requires: ClassVar[tuple[str, ...]] = ()
    # True when `score` needs nothing but each image and its prompt (no category, annotations or other
    # scorers' results): `ovi compare --preference` may then score any prior's image with it
    prompt_only: ClassVar[bool] = False
    context: ScorerContext

    def settings(self) -> dict[str, Any]:
        """JSON-able facts the numbers depend on; compared with those stored beside earlier scores."""
        return {"options": dict(self.options)}

    def describe(self) -> dict[str, Any]:
        """JSON-able facts recorded in scores.json but not compared (e.g. the model's folder)."""
        return {}

    @abstractmethod
    def score(self, items: list[ScoreItem], inputs: dict[str, list[ImageScore]]) -> list[ImageScore]:
        """One `ImageScore` per item (all of one category). `inputs[name]` holds, per item, the
        results of each scorer named in `requires`."""

    def official_files(self, category: str, scored: list[tuple[ScoreItem, ImageScore]]) -> dict[str, Any]:
        """Result files for one category: path relative to the category folder -> JSON object or text.

        `scored` is in the official order (by the file counter). Default: none.
        """
        return {}


# ---- benchmarks (`ovi bench generate NAME`) ----------------------------------------------------
class Benchmark(Plugin):
    """A prompt suite: named categories, each an ordered list of prompts.

    `ovi bench generate NAME` writes image j of prompt i of a category to
    `RUN/<category>/samples/{prompt}_{i*K+j:06d}.png` (`ovi_cli.bench.layout`, the official
    T2I-CompBench layout), so a prompt may hold neither `_` nor a path separator (checked before
    any model loads). Keep the module light: read prompt files in `prompts`, not at import.
    """

    categories: ClassVar[tuple[str, ...]] = ()  # generated (and tabulated) in this order
    # a model preset (`--model NAME`) that `ovi bench score` uses for this benchmark's runs when no
    # --model is given: a benchmark of a plugin's own world is scored with that world's models
    score_preset: ClassVar[str | None] = None

    @abstractmethod
    def prompts(self, category: str) -> list[str]:
        """The prompts of `category` in file order (prompt i gives the images i*K ... i*K+K-1)."""

    def source(self, category: str) -> str:
        """Where the prompts of `category` come from (a file, or a description), for `bench.json`."""
        return f"{self.name}:{category}"


# ---- encoder families: which CLIP space, and how its towers load ----------------------------------
class EncoderFamily(Plugin):
    """How one CLIP space's text tower, vision tower, tokenizer and image processor load.

    `kandinsky22-prior` reads the Kandinsky 2.2 prior repository layout (`image_encoder/`,
    `text_encoder/`, `tokenizer/`, `image_processor/`); `clip` reads a plain CLIP model folder
    (one `CLIPModel`, e.g. `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`). A model preset or a decoder
    names the family it needs (`encoder_family`); stats stores record their encoder and are
    refused in another space.
    """

    # what a local folder must hold, for the offline check (`ovi_cli.hub.check_models`)
    subfolders: ClassVar[tuple[str, ...]] = ()

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.settings.encoder_model, "encoder", "--encoder-model", self.subfolders)]

    @abstractmethod
    def load_encoders(self, source: str) -> Encoders:
        """`Encoders` from a hub id or a local folder, on `self.device`, weights in `self.context.weight_dtype`."""


# ---- set-level metrics (fidelity): a run's features and a reference's in, numbers out ------------
class FeatureSpace(Plugin):
    """Images -> one feature vector each (CLIP image tower, DINOv2, Inception, ...), for set metrics.

    `settings()` is what the features depend on (weights, resolution): features are cached under
    it, by image content hash, and a cache made with other settings is never reused.
    """

    def settings_key(self) -> dict[str, Any]:
        """JSON-able facts the features depend on (model fingerprint, preprocessing)."""
        return {"name": self.name, "options": dict(self.options)}

    @abstractmethod
    def features(self, images: list[Any]) -> Any:
        """`[N, D]` float numpy array for N PIL images (batched by the caller)."""


@dataclass
class ReferenceSet:
    """The real images a run is compared with, in one feature space.

    `features` `[N, D]` when the reference's vectors are at hand (a folder, or a store's stored
    embeddings); `mean`/`cov` when only moments are (a store's float64 moments): metrics that
    need vectors refuse a moments-only reference by name.
    """

    count: int
    features: Any = None  # numpy [N, D] or None
    mean: Any = None  # numpy [D] float64, or None (then computed from features)
    cov: Any = None  # numpy [D, D] float64, or None
    source: str = ""


@dataclass
class MetricValue:
    """One named number with its interval and the sample sizes it was computed at."""

    value: float
    low: float | None = None  # interval bounds (bootstrap or +- std), None when not defined
    high: float | None = None
    n: int = 0  # generated samples
    n_ref: int = 0  # reference samples
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able: std, subsets, k, ...


class SetMetric(Plugin):
    """A set-level metric: a run's features and a reference's in, named `MetricValue`s out.

    `min_samples` is the smallest run (and reference) size the metric is defined for; below it
    ovi refuses with one line naming the minimum, before any model loads.
    """

    min_samples: ClassVar[int] = 2
    needs_vectors: ClassVar[bool] = True  # False: works from the reference's moments alone (FD)

    @abstractmethod
    def compute(self, features: Any, reference: ReferenceSet) -> dict[str, MetricValue]:
        """Named values for `features` `[N, D]` against `reference` (e.g. {"fd": MetricValue(...)})."""


# ---- image sources for build-stats (the base lives in the stats layer) -----------------------------
from ovi_stats.sources import EmbeddingChunk, ImageSource, SourceSample  # noqa: E402,F401 - re-exported for plugin authors
