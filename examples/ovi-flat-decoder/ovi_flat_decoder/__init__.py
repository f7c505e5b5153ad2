"""An example decoder plugin: an image from a CLIP image embedding, with no model at all.

Each image is a vertical gradient between two colours read from the embedding (its first six
values through tanh), so different embeddings give different images and the same embedding the
same image. Not useful for pictures; useful as a complete, runnable decoder written only against
ovi's public plugin contract (`ovi_cli.api`, `ovi_cli.hookimpl`, `ovi_cli.errors`):

- options declared once on the class (`PluginOption`), read from `self.options`;
- the run's settings (`height`, `width`) from `self.settings`, the device from `self.device`;
- `load()` once before decoding (here: nothing to load), `decode()` per batch, progress reported
  through `on_step`.

Install it (`pip install -e examples/ovi-flat-decoder`), then:
    ovi gen "a red circle" --model toy --decoder flat --option flat.mode=gradient
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import Decoder, PluginOption
from ovi_cli.errors import OviError

if TYPE_CHECKING:
    from torch import Tensor

MODES = ("flat", "gradient")


def colours(row: list[float]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Two RGB colours from the first six values of an embedding row (already through tanh)."""
    to_byte = [int(round(v * 127 + 128)) for v in row[:6]]
    return (to_byte[0], to_byte[1], to_byte[2]), (to_byte[3], to_byte[4], to_byte[5])


class FlatDecoder(Decoder):
    """A flat colour (or a two-colour gradient) per image, from the embedding."""

    name = "flat"  # what users type after --decoder
    description = "example decoder: a flat colour or gradient read from the embedding (no model)"
    uses_settings = ("height", "width")  # what the sidecar's "decoding" records for this decoder
    options = (PluginOption("mode", str, "flat", "flat: one colour; gradient: top to bottom", choices=MODES),)

    def load(self) -> None:
        if self.settings.height > 4096 or self.settings.width > 4096:
            raise OviError("decoder 'flat' draws at most 4096x4096 pixels")

    def decode(
        self,
        image_embeds: Tensor,
        negative_image_embeds: Tensor,
        seeds: list[int],
        on_step: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        from PIL import Image

        if image_embeds.shape[-1] < 6:
            raise OviError(f"decoder 'flat' needs embeddings of at least 6 values, got {image_embeds.shape[-1]}")
        h, w = self.settings.height, self.settings.width
        images = []
        for row in image_embeds.float().tanh().cpu().tolist():
            top, bottom = colours(row)
            if self.options["mode"] == "flat":
                images.append(Image.new("RGB", (w, h), top))
            else:
                image = Image.new("RGB", (w, h))
                for y in range(h):
                    t = y / max(1, h - 1)
                    image.paste(tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)), (0, y, w, y + 1))
                images.append(image)
        if on_step is not None:
            on_step(1, 1)
        return images


@hookimpl
def register_decoders(register):
    register(FlatDecoder)
