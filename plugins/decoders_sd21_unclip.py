"""Decoder `sd21-unclip` and model preset `--model sd21-unclip`: OVI in OpenCLIP ViT-H-14 space.

Stable Diffusion 2.1 unCLIP (`stabilityai/stable-diffusion-2-1-unclip`) is conditioned on an
OpenCLIP ViT-H-14 image embedding (1024-d), which diffusers' `StableUnCLIPImg2ImgPipeline` takes
as `image_embeds`, noised to `noise_level` by its own image-noising scheduler. OVI optimises the
embedding in that space: the preset names the `clip` encoder family with
`laion/CLIP-ViT-H-14-laion2B-s32B-b79K` (its text tower gives OVI's target; its vision tower is
the one the unCLIP model was trained on, and `--option clip.vision=stabilityai/stable-diffusion-2-1-unclip`
takes the unCLIP repo's own `image_encoder/` instead). A statistics store for its constraints is
built with the same towers: `ovi build-stats DIR --model sd21-unclip`.

The pipeline makes its own unconditional embedding (zeros), so ovi's negative embedding is not
used; the prompt is passed as the pipeline's text prompt too (`--option sd21-unclip.prompt=false`
leaves it empty, as in unCLIP image variation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Decoder, ModelPreset, PluginOption
from ovi_cli.errors import OviError
from ovi_cli.hub import ModelRef

if TYPE_CHECKING:
    from torch import Tensor

UNCLIP_MODEL = "stabilityai/stable-diffusion-2-1-unclip"
VIT_H_MODEL = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
UNCLIP_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "image_normalizer",
                     "image_noising_scheduler", "image_encoder", "feature_extractor")


def check_embed_dim(decoder: str, expected: int, got: int) -> None:
    """One line when the embeddings' width is not the decoder's CLIP space's."""
    if expected != got:
        raise OviError(f"decoder {decoder!r} takes {expected}-d CLIP image embeddings but the encoders give {got}-d: "
                       f"use the decoder's model preset (--model {decoder}) or encoders of its CLIP space")


class SD21UnclipDecoder(Decoder):
    """SD 2.1 unCLIP (diffusers StableUnCLIPImg2ImgPipeline) from an OpenCLIP ViT-H-14 image embedding."""

    name = "sd21-unclip"
    description = ("Stable Diffusion 2.1 unCLIP (StableUnCLIPImg2ImgPipeline, image_embeds + noise_level): "
                   "OpenCLIP ViT-H-14 space, --model sd21-unclip")
    encoder_family = "clip"
    uses_prompts = True
    options = (
        PluginOption("noise_level", int, 0, "noise added to the image embedding before decoding (0 = none; the "
                     "image-noising scheduler's steps bound it)", minimum=0),
        PluginOption("prompt", bool, True, "pass the prompt as the text prompt too (false: image embedding only)"),
    )

    pipe: Any = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.settings.decoder_model, "SD 2.1 unCLIP decoder", "--decoder-model", UNCLIP_SUBFOLDERS)]

    def load(self) -> None:
        from ovi_plugins.diffusers_decoding import check_size, load_pipeline

        pipe = load_pipeline("StableUnCLIPImg2ImgPipeline", self.settings.decoder_model,
                             what="SD 2.1 unCLIP decoder", flag="--decoder-model", subfolders=UNCLIP_SUBFOLDERS,
                             weight_dtype=self.context.weight_dtype)
        limit = int(pipe.image_noising_scheduler.config.num_train_timesteps) - 1
        if self.options["noise_level"] > limit:
            raise OviError(f"--option sd21-unclip.noise_level must be <= {limit} for this model "
                           f"(got {self.options['noise_level']})")
        check_size(self.settings.height, self.settings.width, 2 ** (len(pipe.vae.config.block_out_channels) - 1))
        self.pipe = pipe.to(self.device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.settings.decoder_model, "pipeline": "StableUnCLIPImg2ImgPipeline"}

    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
        prompts: list[str] | None = None,
    ) -> list[Any]:
        import torch

        from ovi_plugins.diffusers_decoding import seeded_generators, text_prompts

        s = self.settings
        check_embed_dim(self.name, int(self.pipe.image_normalizer.config.embedding_dim), int(image_embeds.shape[-1]))
        generators = seeded_generators(self.device, seeds)
        text = text_prompts(prompts, len(seeds), self.options["prompt"])
        callback = (lambda step, timestep, latents: on_step(step + 1, s.decoder_steps)) if on_step else None
        with torch.inference_mode():
            out = self.pipe(
                prompt=text, image_embeds=image_embeds.to(self.device, self.pipe.unet.dtype),
                noise_level=int(self.options["noise_level"]), height=s.height, width=s.width,
                num_inference_steps=s.decoder_steps, guidance_scale=s.guidance_scale, generator=generators,
                callback=callback,
            )
        return list(out.images)


class SD21UnclipModels(ModelPreset):
    """SD 2.1 unCLIP with OVI in OpenCLIP ViT-H-14 space (the `clip` encoder family)."""

    name = "sd21-unclip"
    description = (f"Stable Diffusion 2.1 unCLIP ({UNCLIP_MODEL}) with OVI in OpenCLIP ViT-H-14 space "
                   f"({VIT_H_MODEL}, encoder family clip); 768x768")

    def overrides(self) -> dict[str, Any]:
        return {"encoder_family": "clip", "encoder_model": VIT_H_MODEL, "decoder": "sd21-unclip",
                "decoder_model": UNCLIP_MODEL, "height": 768, "width": 768, "decoder_steps": 20,
                "guidance_scale": 10.0}


@hookimpl
def register_decoders(register):
    register(SD21UnclipDecoder)


@hookimpl
def register_models(register):
    register(SD21UnclipModels)
