"""A third-party-style decoder plugin for the tests: paints each image one colour from its embedding.

Registered in-process (`load_registry(extra=[("flat", this module)])`), by the same path as an
installed package's entry point.
"""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_cli.api import Decoder


class FlatColourDecoder(Decoder):
    name = "flat"
    description = "one colour per image, from the first three embedding values"

    def decode(self, image_embeds, negative_image_embeds, seeds, on_step=None):
        from PIL import Image

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
