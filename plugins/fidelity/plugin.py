"""ovi's built-in fidelity plugins (entry point `fidelity` in group `ovi`): feature spaces clip,
dinov2, inception; set metrics fd, kid, prdc. Light on import: torch and the metric libraries load
inside the plugins' methods."""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_plugins.fidelity.metrics import FrechetDistance, KernelDistance, PrecisionRecall
from ovi_plugins.fidelity.spaces import ClipSpace, Dinov2Space, InceptionSpace


@hookimpl
def register_feature_spaces(register):
    for cls in (ClipSpace, Dinov2Space, InceptionSpace):
        register(cls)


@hookimpl
def register_metrics(register):
    for cls in (FrechetDistance, KernelDistance, PrecisionRecall):
        register(cls)
