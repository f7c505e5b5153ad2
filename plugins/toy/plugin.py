"""The toy world's plugin (entry point `toy` in group `ovi`): decoder `toy`, prior `toy-prior`,
the model preset `--model toy` and the `ovi toy ...` commands.

- decoder `toy`: reads a folder with config.json (format "ovi-toy-decoder") + model.safetensors, by
  default the one shipped in `plugins/toy/models/decoder` (selected by `--model toy`). Deterministic:
  seeds, the negative embedding, the decoder steps and the guidance scale are not used. Makes 64x64
  images, resized to --height x --width when those differ.
- benchmark `toy`: held-out prompts in two categories, single and binding (`ovi bench generate toy`).
- prior `toy-prior`: the trained ECLIPSE-style toy prior (the "trained prior" baseline of the toy
  evaluation); `--option toy-prior.model=DIR` may name another folder of the same format.

Light on import: torch, PIL and the networks load on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Decoder, PluginOption, Prior, PriorJob, PriorOutput
from ovi_cli.errors import OviError
from ovi_cli.hub import ModelRef, resolve_model_dir
from ovi_plugins.toy.preset import MODELS_DIR, ToyModels

if TYPE_CHECKING:
    from torch import Tensor


def _load(source: str, fmt: str, what: str, flag: str):
    from ovi_plugins.toy.nets import load_net

    root = resolve_model_dir(source, what=what, flag=flag)
    try:
        return load_net(root, fmt)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise OviError(f"cannot load {what} from {source!r}: {str(exc).splitlines()[0]}") from exc


def tensor_to_pil(images: Tensor) -> list[Any]:
    import torch
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


class ToyDecoder(Decoder):
    """The toy world's decoder: a small conv generator from the toy CLIP image embedding."""

    name = "toy"
    description = "toy-world decoder (conv generator from the toy CLIP image embedding; --model toy)"
    uses_settings = ("height", "width")
    net: Any = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.settings.decoder_model, "toy decoder", "--decoder-model")]

    def load(self) -> None:
        from ovi_plugins.toy.nets import DECODER_FORMAT

        self.net, self.config = _load(self.settings.decoder_model, DECODER_FORMAT, "toy decoder", "--decoder-model")
        self.net.to(self.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.settings.decoder_model}

    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        import torch
        from PIL import Image

        if int(image_embeds.shape[-1]) != int(self.config["embed_dim"]):
            raise OviError(f"the toy decoder takes {self.config['embed_dim']}-d embeddings, got "
                           f"{image_embeds.shape[-1]}-d (use --model toy or the toy encoder)")
        with torch.no_grad():
            images = tensor_to_pil(self.net(image_embeds.to(self.device, torch.float32)))
        if on_step is not None:
            on_step(1, 1)
        size = (self.settings.width, self.settings.height)
        return [im if im.size == size else im.resize(size, Image.BICUBIC) for im in images]


class ToyPrior(Prior):
    """The trained toy prior (ECLIPSE-style: projection + contrastive loss, no diffusion)."""

    name = "toy-prior"
    description = "trained toy prior (ECLIPSE-style, toy world only): the trained-prior baseline"
    reference_in_compare = True
    options = (PluginOption("model", str, str(MODELS_DIR / "toy_prior"), "folder of the toy prior",
                            flag="--prior-model"),)

    net: Any = None
    source: str | None = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.options.get("model") or str(MODELS_DIR / "toy_prior"), "toy prior",
                         "--option toy-prior.model")]

    def embed(self, job: PriorJob) -> PriorOutput:
        import torch

        from ovi_plugins.toy.nets import PRIOR_FORMAT

        source = self.options.get("model") or str(MODELS_DIR / "toy_prior")
        if self.net is None or self.source != source:
            self.net, self.config = _load(source, PRIOR_FORMAT, "toy prior", "--option toy-prior.model")
            self.source = source
        t = job.text
        if t.text_embeds.shape[-1] != self.config["text_dim"] or t.last_hidden_state.shape[-1] != self.config[
                "hidden_dim"]:
            raise OviError("the toy prior only works with the toy encoder (use --model toy)")
        with torch.no_grad():
            out = self.net.embed(t.text_embeds.cpu(), t.last_hidden_state.cpu(), t.attention_mask.cpu())
        return PriorOutput(out.float(), [{"prior_model": source} for _ in job.prompts])


@hookimpl
def register_decoders(register):
    register(ToyDecoder)


@hookimpl
def register_priors(register):
    register(ToyPrior)


@hookimpl
def register_models(register):
    register(ToyModels)


@hookimpl
def register_benchmarks(register):
    from ovi_plugins.toy.benchmark import ToyBenchmark

    register(ToyBenchmark)


@hookimpl
def register_commands(cli, ui):
    from ovi_plugins.toy.commands import add_commands

    add_commands(cli, ui)


@hookimpl
def register_scorers(register):
    from ovi_plugins.toy.scorers import OracleScorer

    register(OracleScorer)
