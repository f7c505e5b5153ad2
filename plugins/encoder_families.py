"""Built-in encoder families: how a CLIP space's towers load (kind `encoder_family`).

- `kandinsky22-prior`: the Kandinsky 2.2 prior repository layout
  (`kandinsky-community/kandinsky-2-2-prior`: `image_encoder/` CLIPVisionModelWithProjection,
  `text_encoder/` CLIPTextModelWithProjection, `tokenizer/`, `image_processor/`; `prior/` and
  `scheduler/` are ignored). OpenCLIP ViT-bigG-14 space, 1280-d. The default.
- `clip`: a plain transformers CLIP model folder (one `CLIPModel` config.json and weights, the
  tokenizer files and `preprocessor_config.json` at the top, e.g.
  `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`), split into its text and vision towers with their
  projections. `--option clip.vision=ID_OR_FOLDER` takes the vision tower and image processor
  from a repository's own `image_encoder/` and `feature_extractor/` instead (the layout of
  `stabilityai/stable-diffusion-2-1-unclip`); the text tower always comes from the CLIP folder,
  since the unCLIP repository's text encoder has no projection.

A hub id and a local folder take the same path (`ovi_cli.hub.resolve_model_dir`). Light on
import: transformers loads inside `load_encoders`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ovi_cli import hookimpl
from ovi_cli.api import EncoderFamily, PluginOption
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import ModelRef, resolve_model_dir
from ovi_cli.settings import ENCODER_SUBFOLDERS

if TYPE_CHECKING:
    from ovi_cli.encoders import Encoders

UNCLIP_VISION_SUBFOLDERS = ("image_encoder", "feature_extractor")


def _load(source: str, what: str, build: Any) -> Any:
    """`build()` with transformers' warnings silenced and a load failure as one line naming `source`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build()
    except (OSError, ValueError, KeyError) as exc:
        raise OviError(f"cannot load {what} from {source!r}: {first_line(exc, with_type=False)}") from exc


class Kandinsky22PriorFamily(EncoderFamily):
    """The Kandinsky 2.2 prior repository layout (OpenCLIP ViT-bigG-14, 1280-d)."""

    name = "kandinsky22-prior"
    description = ("CLIP towers in the kandinsky-2-2-prior layout (image_encoder/, text_encoder/, tokenizer/, "
                   "image_processor/): OpenCLIP ViT-bigG-14 for Kandinsky 2.2 and SDXL IP-Adapter")
    subfolders = ENCODER_SUBFOLDERS

    def load_encoders(self, source: str) -> Encoders:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

        from ovi_cli.encoders import Encoders, _image_processor_class

        root = resolve_model_dir(source, what="encoder", flag="--encoder-model", subfolders=self.subfolders)
        wdtype = self.context.weight_dtype
        text, vision, tokenizer, processor = _load(source, "encoders", lambda: (
            CLIPTextModelWithProjection.from_pretrained(root / "text_encoder", dtype=wdtype),
            CLIPVisionModelWithProjection.from_pretrained(root / "image_encoder", dtype=wdtype),
            CLIPTokenizer.from_pretrained(root / "tokenizer"),
            _image_processor_class().from_pretrained(root / "image_processor"),
        ))
        return Encoders(text, vision, tokenizer, processor, source=source, device=self.device,
                        dtype=self.dtype, family=self.name)


class ClipFamily(EncoderFamily):
    """A plain CLIP model folder (one CLIPModel), split into text and vision towers with projections."""

    name = "clip"
    description = ("a plain CLIP model folder (CLIPModel config + tokenizer + preprocessor_config.json), e.g. "
                   "laion/CLIP-ViT-H-14-laion2B-s32B-b79K for SD 2.1 unCLIP")
    options = (
        PluginOption("vision", str, "", "hub id or folder whose image_encoder/ + feature_extractor/ give the vision "
                     "tower (e.g. the unCLIP repo); empty: the CLIP folder's own vision tower"),
    )

    def required_models(self) -> list[ModelRef]:
        refs = [ModelRef(self.settings.encoder_model, "CLIP", "--encoder-model")]
        if self.options.get("vision"):
            refs.append(ModelRef(self.options["vision"], "CLIP vision", "--option clip.vision",
                                 UNCLIP_VISION_SUBFOLDERS))
        return refs

    def load_encoders(self, source: str) -> Encoders:
        from transformers import (
            CLIPConfig,
            CLIPTextModelWithProjection,
            CLIPTokenizer,
            CLIPVisionModelWithProjection,
        )

        from ovi_cli.encoders import Encoders, _image_processor_class

        root = resolve_model_dir(source, what="CLIP", flag="--encoder-model")
        if not (root / "config.json").is_file():
            raise OviError(f"CLIP model {source!r} has no config.json (expected a CLIP model folder such as "
                           "laion/CLIP-ViT-H-14-laion2B-s32B-b79K; for the kandinsky-2-2-prior layout use "
                           "--encoder-family kandinsky22-prior)")
        config = _load(source, "CLIP", lambda: CLIPConfig.from_pretrained(root))
        if getattr(config, "model_type", "") != "clip":
            raise OviError(f"CLIP model {source!r}: config.json is a {config.model_type!r} model, not a CLIPModel")
        # the towers' own configs carry no projection width; the CLIPModel's does
        text_cfg, vis_cfg = config.text_config, config.vision_config
        text_cfg.projection_dim = vis_cfg.projection_dim = config.projection_dim
        wdtype = self.context.weight_dtype
        text, tokenizer = _load(source, "CLIP", lambda: (
            CLIPTextModelWithProjection.from_pretrained(root, config=text_cfg, dtype=wdtype),
            CLIPTokenizer.from_pretrained(root),
        ))
        vision_source = self.options.get("vision") or ""
        if vision_source:
            vroot = resolve_model_dir(vision_source, what="CLIP vision", flag="--option clip.vision",
                                      subfolders=UNCLIP_VISION_SUBFOLDERS)
            vision, processor = _load(vision_source, "the vision tower", lambda: (
                CLIPVisionModelWithProjection.from_pretrained(vroot / "image_encoder", dtype=wdtype),
                _image_processor_class().from_pretrained(vroot / "feature_extractor"),
            ))
            if int(vision.config.projection_dim) != int(config.projection_dim):
                raise OviError(f"--option clip.vision {vision_source!r}: its vision tower projects to "
                               f"{vision.config.projection_dim} dimensions, the CLIP text tower of {source!r} to "
                               f"{config.projection_dim}: not the same CLIP space")
        else:
            vision, processor = _load(source, "CLIP", lambda: (
                CLIPVisionModelWithProjection.from_pretrained(root, config=vis_cfg, dtype=wdtype),
                _image_processor_class().from_pretrained(root),
            ))
        return Encoders(text, vision, tokenizer, processor, source=source,
                        device=self.device, dtype=self.dtype, family=self.name)


@hookimpl
def register_encoder_families(register):
    register(Kandinsky22PriorFamily)
    register(ClipFamily)
