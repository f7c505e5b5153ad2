"""A decoder that paints the whole image one colour, derived from the image embedding."""

from PIL import Image

from ovi_cli import hookimpl
from ovi_cli.api import Decoder


class FlatColourDecoder(Decoder):
    name = "flat"
    description = "one colour per image, from the first three embedding values"

    def decode(self, image_embeds, negative_image_embeds, seeds, on_step=None):
        images = []
        for row in image_embeds.float().cpu():
            rgb = tuple(int(v) for v in (row[:3].tanh() * 127 + 128).tolist())
            images.append(Image.new("RGB", (self.settings.width, self.settings.height), rgb))
            if on_step is not None:
                on_step(1, 1)
        return images


@hookimpl
def register_decoders(register):
    register(FlatColourDecoder)
