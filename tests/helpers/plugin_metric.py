"""A third-party-style set-metric plugin and feature space for the tests (issue 18's seam (b)).

`mean-gap`: the distance between the run's and the reference's feature means, with the reference's
mean from its moments when that is all it has (so it works against a statistics store).
`pixels`: each image's mean R, G, B in [0, 1] (a feature space with no model at all).
Registered in-process (`load_registry(extra=[("metric-example", this module)])`), by the same path
as an installed package's entry point, and written only against `ovi_cli.api`.
"""

from __future__ import annotations

from ovi_cli import hookimpl
from ovi_cli.api import FeatureSpace, MetricValue, PluginOption, SetMetric


class MeanGap(SetMetric):
    name = "mean-gap"
    description = "distance between the feature means of the run and the reference"
    min_samples = 1
    needs_vectors = False
    options = (PluginOption("scale", float, 1.0, "multiplies the distance"),)

    def compute(self, features, reference):
        import numpy as np

        ref_mean = reference.mean if reference.mean is not None else np.asarray(reference.features).mean(axis=0)
        gap = float(np.linalg.norm(np.asarray(features).mean(axis=0) - ref_mean)) * self.options["scale"]
        return {"mean-gap": MetricValue(gap, n=len(features), n_ref=reference.count,
                                        details={"scale": self.options["scale"]})}


class MeanColour(FeatureSpace):
    name = "pixels"
    description = "mean R, G, B of each image"

    def features(self, images):
        import numpy as np

        return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) / 255 for im in images])


@hookimpl
def register_metrics(register):
    register(MeanGap)


@hookimpl
def register_feature_spaces(register):
    register(MeanColour)
