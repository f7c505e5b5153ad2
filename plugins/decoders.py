"""Built-in decoders: `kandinsky22` (Kandinsky 2.2's U-Net + MoVQ) and `embeds` (no image)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ovi_cli import hookimpl
from ovi_cli.api import Decoder
from ovi_cli.hub import ModelRef

if TYPE_CHECKING:
    from torch import Tensor

DECODER_SUBFOLDERS = ("unet", "movq", "scheduler")


class Kandinsky22Decoder(Decoder):
    """diffusers `KandinskyV22Pipeline` from a hub id or a folder in the decoder repo's layout."""

    name = "kandinsky22"
    description = "Kandinsky 2.2 decoder (diffusers KandinskyV22Pipeline)"

    pipe: Any = None

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.settings.decoder_model, "decoder", "--decoder-model", DECODER_SUBFOLDERS)]

    def load(self) -> None:
        from ovi_plugins.diffusers_decoding import check_size, load_pipeline

        pipe = load_pipeline("KandinskyV22Pipeline", self.settings.decoder_model, what="decoder",
                             flag="--decoder-model", subfolders=DECODER_SUBFOLDERS,
                             weight_dtype=self.context.weight_dtype)
        self.pipe = pipe.to(self.device)
        check_size(self.settings.height, self.settings.width, self.pipe.movq_scale_factor**2)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.settings.decoder_model}

    # what the task decoders (img2img, inpaint, controlnet) change of the same call
    uses_step_end: ClassVar[bool] = True  # the pipeline takes callback_on_step_end (controlnet: the old callback)

    def task_kwargs(self, batch: int) -> dict[str, Any]:
        """The task's own pipeline arguments for a batch of `batch` images (text to image: none)."""
        return {}

    def steps_run(self) -> int:
        """The denoising steps the pipeline runs (img2img runs the last `strength` share)."""
        return self.settings.decoder_steps

    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        import torch

        from ovi_plugins.diffusers_decoding import seeded_generators, step_end

        s = self.settings
        dtype = self.pipe.unet.dtype
        kwargs = self.task_kwargs(len(seeds))
        total = self.steps_run()
        if self.uses_step_end:
            kwargs["callback_on_step_end"] = step_end(on_step, total)
        elif on_step is not None:
            kwargs["callback"] = lambda step, timestep, latents: on_step(step + 1, total)
        with torch.inference_mode():
            out = self.pipe(
                image_embeds=image_embeds.to(self.device, dtype),
                negative_image_embeds=negative_image_embeds.to(self.device, dtype),
                height=s.height, width=s.width, num_inference_steps=s.decoder_steps,
                guidance_scale=s.guidance_scale, generator=seeded_generators(self.device, seeds), **kwargs,
            )
        return list(out.images)


class EmbedsDecoder(Decoder):
    """No image: keep the embeddings (`.safetensors`) and the sidecar. OVI without a decoder."""

    name = "embeds"
    description = "write embeddings and sidecar only (no image)"
    produces_images = False

    def decode(self, image_embeds, negative_image_embeds, seeds, on_step=None) -> list[Any]:
        return []


@hookimpl
def register_decoders(register):
    register(Kandinsky22Decoder)
    register(EmbedsDecoder)
