"""Every Kandinsky 2.2 task from the CLI: `kandinsky22-img2img`, `kandinsky22-inpaint`, `kandinsky22-controlnet`.

Each decodes the prior's image embedding (OVI's or another prior's) through the diffusers
pipeline of its task, exactly as a diffusers user would hand `image_embeds` /
`negative_image_embeds` from `KandinskyV22PriorPipeline` to it:

- `kandinsky22-img2img`: `KandinskyV22Img2ImgPipeline` with an init image and `strength`
  (`--option kandinsky22-img2img.image=PATH`, `.strength=0.3`); the decoder repo is
  `--decoder-model` (kandinsky-2-2-decoder, the text-to-image decoder's weights).
- `kandinsky22-inpaint`: `KandinskyV22InpaintPipeline` with an image and a mask of the same size
  (white: repaint, black: keep, as diffusers >= 0.19); weights from `.model`
  (default `kandinsky-community/kandinsky-2-2-decoder-inpaint`).
- `kandinsky22-controlnet`: `KandinskyV22ControlnetPipeline` with a hint image (e.g. a depth map,
  read as RGB in [0, 1]); weights from `.model` (default
  `kandinsky-community/kandinsky-2-2-controlnet-depth`).

Every input is checked when the decoder is made, before any model loads: a missing or unreadable
image, a mask of another size than its image, a strength outside [0, 1] are one line each.
Light on import: torch, PIL and diffusers load inside methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ovi_cli import hookimpl
from ovi_cli.api import PluginOption
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import ModelRef
from ovi_plugins.decoders import DECODER_SUBFOLDERS, Kandinsky22Decoder

if TYPE_CHECKING:
    pass

DEFAULT_INPAINT_MODEL = "kandinsky-community/kandinsky-2-2-decoder-inpaint"
DEFAULT_CONTROLNET_MODEL = "kandinsky-community/kandinsky-2-2-controlnet-depth"


def read_image(path: str, what: str) -> Any:
    """An RGB PIL image read whole now (one line when missing or unreadable), for checks before loading."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not path:
        raise OviError(f"{what}: no image given")
    if not p.is_file():
        raise OviError(f"{what}: no such file {path!r}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise OviError(f"{what}: cannot read {path!r} as an image ({first_line(exc, with_type=False)})") from None


class _KandinskyTaskDecoder(Kandinsky22Decoder):
    """Kandinsky 2.2 through one task's diffusers pipeline; subclasses name it and add its inputs."""

    pipeline_class: ClassVar[str] = ""
    model_option: ClassVar[bool] = False  # the weights come from `.model` (else from --decoder-model)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inputs = self.check_inputs()  # before any model loads

    def option_flag(self, key: str) -> str:
        return f"--option {self.name}.{key}"

    def check_inputs(self) -> dict[str, Any]:
        """The task's inputs read and checked (one-line `OviError`s); what `decode` passes on."""
        return {}

    @property
    def source(self) -> str:
        return self.options["model"] if self.model_option else self.settings.decoder_model

    @property
    def source_flag(self) -> str:
        return self.option_flag("model") if self.model_option else "--decoder-model"

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.source, f"{self.name} decoder", self.source_flag, DECODER_SUBFOLDERS)]

    def load(self) -> None:
        from ovi_plugins.diffusers_decoding import check_size, load_pipeline

        pipe = load_pipeline(self.pipeline_class, self.source, what=f"{self.name} decoder", flag=self.source_flag,
                             subfolders=DECODER_SUBFOLDERS, weight_dtype=self.context.weight_dtype)
        self.pipe = pipe.to(self.device)
        # the img2img and inpaint pipelines keep no `movq_scale_factor`: it is the MoVQ's own
        check_size(self.settings.height, self.settings.width,
                   (2 ** (len(self.pipe.movq.config.block_out_channels) - 1)) ** 2)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "pipeline": self.pipeline_class}


class Img2ImgDecoder(_KandinskyTaskDecoder):
    """Kandinsky 2.2 image-to-image: the init image noised to `strength`, then denoised toward the embedding."""

    name = "kandinsky22-img2img"
    description = "Kandinsky 2.2 image-to-image (diffusers KandinskyV22Img2ImgPipeline): init image + strength"
    pipeline_class = "KandinskyV22Img2ImgPipeline"
    options = (
        PluginOption("image", str, "", "the init image (any format PIL reads), resized to --width x --height",
                     flag="--init-image"),
        PluginOption("strength", float, 0.3, "how far the init image is noised: 0 keeps it, 1 ignores it",
                     minimum=0.0, flag="--strength"),
    )

    def check_inputs(self) -> dict[str, Any]:
        strength = float(self.options["strength"])
        if not 0.0 <= strength <= 1.0:
            raise OviError(f"{self.option_flag('strength')} must be between 0 and 1 (got {strength:g})")
        if not self.options["image"]:
            raise OviError(f"decoder {self.name!r} needs an init image: {self.option_flag('image')}=PATH")
        return {"image": read_image(self.options["image"], self.option_flag("image")), "strength": strength}

    def task_kwargs(self, batch: int) -> dict[str, Any]:
        return {"image": [self.inputs["image"]] * batch, "strength": self.inputs["strength"]}

    def steps_run(self) -> int:
        # diffusers runs the last `strength` share of the schedule
        steps = self.settings.decoder_steps
        return min(int(steps * self.inputs["strength"]), steps)


class InpaintDecoder(_KandinskyTaskDecoder):
    """Kandinsky 2.2 inpainting: the masked part of the image painted from the embedding."""

    name = "kandinsky22-inpaint"
    description = "Kandinsky 2.2 inpainting (diffusers KandinskyV22InpaintPipeline): image + mask (white: repaint)"
    pipeline_class = "KandinskyV22InpaintPipeline"
    model_option = True
    options = (
        PluginOption("image", str, "", "the image to paint into", flag="--init-image"),
        PluginOption("mask", str, "", "the mask, same size as the image: white repaints, black keeps",
                     flag="--mask-image"),
        PluginOption("model", str, DEFAULT_INPAINT_MODEL, "hub id or folder of the inpainting decoder"),
    )

    def check_inputs(self) -> dict[str, Any]:
        for key in ("image", "mask"):
            if not self.options[key]:
                raise OviError(f"decoder {self.name!r} needs an image and a mask: "
                               f"{self.option_flag('image')}=PATH {self.option_flag('mask')}=PATH")
        image = read_image(self.options["image"], self.option_flag("image"))
        mask = read_image(self.options["mask"], self.option_flag("mask"))
        if mask.size != image.size:
            raise OviError(f"{self.option_flag('mask')}: the mask is {mask.size[0]}x{mask.size[1]} but the image is "
                           f"{image.size[0]}x{image.size[1]}; they must be the same size")
        return {"image": image, "mask": mask.convert("L")}

    def task_kwargs(self, batch: int) -> dict[str, Any]:
        import numpy as np

        mask = (np.asarray(self.inputs["mask"], dtype=np.float32) / 255.0 >= 0.5).astype(np.float32)
        return {"image": [self.inputs["image"]] * batch, "mask_image": [mask] * batch}


class ControlnetDecoder(_KandinskyTaskDecoder):
    """Kandinsky 2.2 ControlNet: the embedding decoded under a hint image (a depth map for -depth)."""

    name = "kandinsky22-controlnet"
    description = ("Kandinsky 2.2 ControlNet (diffusers KandinskyV22ControlnetPipeline): hint image, e.g. a depth "
                   "map")
    pipeline_class = "KandinskyV22ControlnetPipeline"
    model_option = True
    uses_step_end = False
    options = (
        PluginOption("hint", str, "", "the hint image (a depth map for the -depth model), resized to --width x "
                     "--height", flag="--hint-image"),
        PluginOption("model", str, DEFAULT_CONTROLNET_MODEL, "hub id or folder of the ControlNet decoder"),
    )

    def check_inputs(self) -> dict[str, Any]:
        if not self.options["hint"]:
            raise OviError(f"decoder {self.name!r} needs a hint image: {self.option_flag('hint')}=PATH")
        return {"hint": read_image(self.options["hint"], self.option_flag("hint"))}

    def task_kwargs(self, batch: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image

        s = self.settings
        hint = self.inputs["hint"].resize((s.width, s.height), Image.Resampling.BICUBIC)
        tensor = torch.from_numpy(np.asarray(hint, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return {"hint": tensor.unsqueeze(0).expand(batch, -1, -1, -1).to(self.device, self.pipe.unet.dtype)}


@hookimpl
def register_decoders(register):
    register(Img2ImgDecoder)
    register(InpaintDecoder)
    register(ControlnetDecoder)
