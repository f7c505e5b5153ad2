"""Decoder `sdxl-ip-adapter` and model preset `--model sdxl-ip-adapter`: SDXL conditioned on OVI's embedding.

IP-Adapter for SDXL (`h94/IP-Adapter`, `sdxl_models/ip-adapter_sdxl.safetensors`) projects an
OpenCLIP ViT-bigG-14 image embedding (1280-d) into four extra tokens that SDXL's cross-attention
reads. That is the very space OVI optimises in for Kandinsky 2.2, so the default encoders (the
`kandinsky22-prior` family) and their statistics stores serve as they are. diffusers'
`StableDiffusionXLPipeline` takes the embedding as `ip_adapter_image_embeds`; the unconditional
image embedding is zeros, as diffusers' own `encode_image` makes it for this adapter (ovi's
negative embedding is not used).

The prompt is passed as SDXL's text prompt too; `--option sdxl-ip-adapter.prompt=false` blanks it,
so the image embedding alone conditions. `.scale` is the adapter's weight
(`set_ip_adapter_scale`); `.adapter` the hub id or folder that holds `.weight`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Decoder, ModelPreset, PluginOption
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import ModelRef, resolve_model_dir
from ovi_plugins.decoders_sd21_unclip import check_embed_dim

if TYPE_CHECKING:
    from torch import Tensor

SDXL_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
IP_ADAPTER_REPO = "h94/IP-Adapter"
IP_ADAPTER_WEIGHT = "sdxl_models/ip-adapter_sdxl.safetensors"
SDXL_SUBFOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")


class SdxlIpAdapterDecoder(Decoder):
    """SDXL + IP-Adapter (diffusers StableDiffusionXLPipeline, ip_adapter_image_embeds) from a ViT-bigG embedding."""

    name = "sdxl-ip-adapter"
    description = ("SDXL with IP-Adapter (StableDiffusionXLPipeline, ip_adapter_image_embeds): OpenCLIP "
                   "ViT-bigG-14 space, the Kandinsky encoders; --model sdxl-ip-adapter")
    uses_prompts = True
    options = (
        PluginOption("scale", float, 1.0, "the IP-Adapter's weight (set_ip_adapter_scale)", minimum=0.0),
        PluginOption("prompt", bool, True, "pass the prompt as SDXL's text prompt too (false: blank it, the image "
                     "embedding alone conditions)"),
        PluginOption("adapter", str, IP_ADAPTER_REPO, "hub id or folder holding the IP-Adapter weights"),
        PluginOption("weight", str, IP_ADAPTER_WEIGHT, "the weight file inside .adapter"),
    )

    pipe: Any = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.settings.decoder_model, "SDXL decoder", "--decoder-model", SDXL_SUBFOLDERS),
                ModelRef(self.options["adapter"], "IP-Adapter", "--option sdxl-ip-adapter.adapter",
                         files=(self.options["weight"],))]

    def load(self) -> None:
        from ovi_plugins.diffusers_decoding import check_size, load_pipeline

        pipe = load_pipeline("StableDiffusionXLPipeline", self.settings.decoder_model, what="SDXL decoder",
                             flag="--decoder-model", subfolders=SDXL_SUBFOLDERS, weight_dtype=self.context.weight_dtype)
        adapter = resolve_model_dir(self.options["adapter"], what="IP-Adapter", flag="--option sdxl-ip-adapter.adapter",
                                    files=(self.options["weight"],))
        weight = PurePosixPath(self.options["weight"])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.load_ip_adapter(str(adapter), subfolder=str(weight.parent) if str(weight.parent) != "." else "",
                                     weight_name=weight.name, image_encoder_folder=None)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise OviError(f"cannot load the IP-Adapter {self.options['adapter']!r} ({weight}): "
                           f"{first_line(exc)}") from exc
        pipe.set_ip_adapter_scale(float(self.options["scale"]))
        check_size(self.settings.height, self.settings.width, 2 ** (len(pipe.vae.config.block_out_channels) - 1))
        self.pipe = pipe.to(self.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.settings.decoder_model, "pipeline": "StableDiffusionXLPipeline",
                "ip_adapter": f"{self.options['adapter']}/{self.options['weight']}"}

    def embed_width(self) -> int:
        """The image-embedding width the loaded adapter projects from."""
        layer = self.pipe.unet.encoder_hid_proj.image_projection_layers[0]
        return int(layer.image_embeds.in_features)

    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
        prompts: list[str] | None = None,
    ) -> list[Any]:
        import torch

        from ovi_plugins.diffusers_decoding import seeded_generators, step_end, text_prompts

        s = self.settings
        check_embed_dim(self.name, self.embed_width(), int(image_embeds.shape[-1]))
        generators = seeded_generators(self.device, seeds)
        text = text_prompts(prompts, len(seeds), self.options["prompt"])
        emb = image_embeds.to(self.device, self.pipe.unet.dtype)[:, None, :]  # [B, 1 image, D]
        # with guidance, diffusers expects [unconditional; conditional]: zeros, as its encode_image gives
        ip = torch.cat([torch.zeros_like(emb), emb]) if s.guidance_scale > 1 else emb

        with torch.inference_mode():
            out = self.pipe(
                prompt=text, ip_adapter_image_embeds=[ip], height=s.height, width=s.width,
                num_inference_steps=s.decoder_steps, guidance_scale=s.guidance_scale, generator=generators,
                callback_on_step_end=step_end(on_step, s.decoder_steps),
            )
        return list(out.images)


class SdxlIpAdapterModels(ModelPreset):
    """SDXL + IP-Adapter with OVI in ViT-bigG-14 space (the Kandinsky 2.2 encoders)."""

    name = "sdxl-ip-adapter"
    description = (f"SDXL ({SDXL_MODEL}) + IP-Adapter ({IP_ADAPTER_REPO} {IP_ADAPTER_WEIGHT}) with OVI in "
                   "ViT-bigG-14 space (the Kandinsky 2.2 encoders); 1024x1024")

    def overrides(self) -> dict[str, Any]:
        return {"decoder": "sdxl-ip-adapter", "decoder_model": SDXL_MODEL, "height": 1024, "width": 1024,
                "decoder_steps": 30, "guidance_scale": 5.0}


@hookimpl
def register_decoders(register):
    register(SdxlIpAdapterDecoder)


@hookimpl
def register_models(register):
    register(SdxlIpAdapterModels)
