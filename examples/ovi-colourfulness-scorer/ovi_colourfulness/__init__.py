"""An example scorer plugin: colourfulness (Hasler and Suesstrunk, 2003), one number per image.

Written only against ovi's public plugin contract. ovi calls `settings()` and `required_models()`
before anything loads (the settings are stored beside the scores: a rerun with other settings is
refused instead of mixing numbers), `load()` once if an image still needs scoring, then `score()`
on batches of images of one category. `official_files()` may write result files beside the
samples (here: none).

Install it (`pip install -e examples/ovi-colourfulness-scorer`), then:
    ovi bench score RUN --scorers colourfulness
"""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_cli.api import ImageScore, PluginOption, Scorer
from ovi_cli.errors import OviError


def colourfulness(rgb) -> tuple[float, float]:
    """`(M, sigma_rg)` of an `[H, W, 3]` float RGB array: M = sigma_rgyb + 0.3 mu_rgyb (the paper's M3)."""
    import numpy as np

    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())), float(rg.std())


class Colourfulness(Scorer):
    name = "colourfulness"  # what users type after --scorers
    description = "example scorer: Hasler-Suesstrunk colourfulness of the image (no model)"
    options = (PluginOption("scale", float, 1.0, "multiply the metric by this", minimum=0.0),)

    def settings(self) -> dict:
        return {"metric": "hasler-susstrunk-2003", "scale": self.options["scale"]}

    def score(self, items, inputs) -> list[ImageScore]:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        out = []
        for item in items:
            try:
                with Image.open(item.path) as image:
                    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
            except (OSError, UnidentifiedImageError) as exc:
                raise OviError(f"colourfulness: cannot read {item.name!r}: {exc}") from None
            value, rg_std = colourfulness(rgb)
            out.append(ImageScore(value * self.options["scale"], {"rg_std": rg_std}))
        return out


@hookimpl
def register_scorers(register):
    register(Colourfulness)
