"""The built-in feature spaces: `clip` (the run's own CLIP image tower), `dinov2`, `inception`.

Which question each answers (docs/fidelity.md): `clip` is the space the priors work in, so it
asks "do the decoded images land where real images' embeddings lie?" and it is the space of an
ovi statistics store (a store's embeddings and moments serve as the reference directly);
`dinov2` (Stein et al. 2023) is a self-supervised space whose Frechet distance tracks human
judgement of realism better than Inception's; `inception` is the classic FID space (InceptionV3
pool3, the TensorFlow weights as torch-fidelity and torchmetrics load them) for comparing with
published FIDs.

Every space loads from a hub id or a local folder (`ovi_cli.hub`: cache first, one line of advice
offline), batches (the caller hands it one batch of PIL images), uses the run's device, and is
light at import (torch and transformers inside methods).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovi_cli.api import FeatureSpace, PluginOption
from ovi_cli.errors import OviError, first_line
from ovi_cli.hub import ModelRef

if TYPE_CHECKING:
    import numpy as np

DEFAULT_DINOV2 = "facebook/dinov2-base"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's release asset
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE


def _fingerprint(source: str, what: str, flag: str) -> str:
    from ovi_cli.bench.score import folder_fingerprint
    from ovi_cli.hub import resolve_model_dir

    return folder_fingerprint(resolve_model_dir(source, what=what, flag=flag))


class ClipSpace(FeatureSpace):
    """The run's CLIP image tower: raw `image_embeds`, the space of OVI, the priors and stats stores."""

    name = "clip"
    description = "the run's own CLIP image tower (image_embeds; the priors' space; stats stores serve directly)"
    encoders: Any = None

    def source(self) -> str:
        return str(self.settings.encoder_model)

    def required_models(self) -> list[ModelRef]:
        from ovi_cli.encoders import ENCODER_SUBFOLDERS

        return [ModelRef(self.source(), "CLIP encoder", "--encoder-model", ENCODER_SUBFOLDERS)]

    def settings_key(self) -> dict[str, Any]:
        return {"name": self.name, "model_fingerprint": _fingerprint(self.source(), "CLIP encoder", "--encoder-model")}

    def load(self) -> None:
        from ovi_cli.encoders import Encoders

        self.encoders = Encoders.load(self.source(), device=self.device or "cpu", dtype=self.dtype or _float32())

    def encoder_fingerprint(self) -> str:
        """The vision tower's fingerprint as stats stores record it (after `load`)."""
        return self.encoders.fingerprint()

    def features(self, images: list[Any]) -> np.ndarray:
        import numpy as np

        return self.encoders.encode_images(images).cpu().numpy().astype(np.float32)


def _float32() -> Any:
    import torch

    return torch.float32


class Dinov2Space(FeatureSpace):
    """DINOv2 (transformers `Dinov2Model`): the CLS token after the final layer norm (`pooler_output`)."""

    name = "dinov2"
    description = "DINOv2 CLS features (Stein et al. 2023: FD_DINOv2 tracks human judgement); facebook/dinov2-base"
    options = (PluginOption("model", str, DEFAULT_DINOV2, "DINOv2: hub id or folder (a Dinov2Model with its "
                            "preprocessor_config.json); alias --dinov2-model"),)
    FLAG = "--dinov2-model"

    def source(self) -> str:
        return str(self.options.get("model") or DEFAULT_DINOV2)

    def required_models(self) -> list[ModelRef]:
        return [ModelRef(self.source(), "DINOv2", self.FLAG)]

    def settings_key(self) -> dict[str, Any]:
        return {"name": self.name, "model_fingerprint": _fingerprint(self.source(), "DINOv2", self.FLAG)}

    def load(self) -> None:
        import torch
        from transformers import AutoImageProcessor, Dinov2Model

        from ovi_cli.hub import resolve_model_dir

        root = resolve_model_dir(self.source(), what="DINOv2", flag=self.FLAG)
        try:
            self.model = Dinov2Model.from_pretrained(root, dtype=self.context.weight_dtype)
            self.processor = AutoImageProcessor.from_pretrained(root)
        except (OSError, ValueError) as exc:
            raise OviError(f"cannot load DINOv2 from {self.source()!r} (a Dinov2Model folder with "
                           f"preprocessor_config.json): {first_line(exc, with_type=False)}") from exc
        self.model = self.model.to(self.device or "cpu").eval().requires_grad_(False)
        self._torch = torch

    def features(self, images: list[Any]) -> np.ndarray:
        torch = self._torch
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model(pixel_values=pixels.to(self.model.device, self.model.dtype))
        return out.pooler_output.float().cpu().numpy()


class InceptionSpace(FeatureSpace):
    """The FID InceptionV3 (pool3, 2048-d) exactly as torchmetrics' FID loads it (torch-fidelity's network)."""

    name = "inception"
    description = "InceptionV3 pool3 as torchmetrics/torch-fidelity load it (classic FID; weights file needed)"
    options = (PluginOption("weights", str, "", f"the torch-fidelity weights file {INCEPTION_FILE} (default: "
                            "torch's hub cache, checkpoints/); alias --inception-weights"),)

    def weights_path(self) -> Path:
        given = self.options.get("weights")
        if given:
            return Path(given).expanduser()
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE

    def check(self) -> None:
        """The weights file is there, or one line saying where to get it (before anything loads)."""
        path = self.weights_path()
        if not path.is_file():
            raise OviError(f"InceptionV3 FID weights {str(path)!r} not found and ovi downloads none: fetch "
                           f"{INCEPTION_URL} on a connected machine and pass --inception-weights FILE "
                           "(or use --features clip or dinov2)")

    def settings_key(self) -> dict[str, Any]:
        self.check()
        return {"name": self.name, "weights_size": self.weights_path().stat().st_size}

    def load(self) -> None:
        self.check()
        import torch

        from ovi_plugins.fidelity.metrics import require

        fid = require("torchmetrics.image.fid", "torchmetrics")
        require("torch_fidelity", "torch-fidelity")
        try:
            self.model = fid.NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                                feature_extractor_weights_path=str(self.weights_path()))
        except (OSError, RuntimeError, ValueError) as exc:
            raise OviError(f"cannot load InceptionV3 weights {str(self.weights_path())!r}: "
                           f"{first_line(exc, with_type=False)}") from exc
        self.model = self.model.to(self.device or "cpu")
        self._torch = torch

    def features(self, images: list[Any]) -> np.ndarray:
        import numpy as np

        torch = self._torch
        # uint8 [B, 3, H, W] as torchmetrics' FID takes them; the network resizes to 299 itself
        arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:  # one batch must share a size; resize like clean-fid would be a different FID
            arrays = [np.asarray(im.convert("RGB").resize((299, 299), 3), dtype=np.uint8) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(self.device or "cpu")
        with torch.no_grad():
            return self.model(x).double().cpu().numpy().astype(np.float32)
