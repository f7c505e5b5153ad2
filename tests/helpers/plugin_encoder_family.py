"""A third-party encoder family written only against the public contract (`ovi_cli.api.EncoderFamily`):
`flat-towers` reads a folder with `text/` (text tower + tokenizer) and `vision/` (vision tower + processor)."""

from __future__ import annotations

from pathlib import Path

from ovi_cli import hookimpl
from ovi_cli.api import EncoderFamily


class FlatTowers(EncoderFamily):
    name = "flat-towers"
    description = "test family: text/ and vision/ subfolders"
    subfolders = ("text", "vision")

    def load_encoders(self, source: str):
        from transformers import (
            CLIPImageProcessor,
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            CLIPVisionModelWithProjection,
        )

        from ovi_cli.encoders import Encoders

        root = Path(source)
        dtype = self.context.weight_dtype
        return Encoders(CLIPTextModelWithProjection.from_pretrained(root / "text", dtype=dtype),
                        CLIPVisionModelWithProjection.from_pretrained(root / "vision", dtype=dtype),
                        CLIPTokenizer.from_pretrained(root / "text"),
                        CLIPImageProcessor.from_pretrained(root / "vision"),
                        source=source, device=self.device, dtype=self.dtype, family=self.name)


@hookimpl
def register_encoder_families(register):
    register(FlatTowers)
