"""The built-in set-level metrics: `fd` (Frechet distance), `kid`, `prdc` (precision, recall, density, coverage).

Each is a `SetMetric`: a run's features `[N, D]` and a `ReferenceSet` in, named `MetricValue`s out,
each carrying its sample sizes. The libraries compute what they were made for:

- `fd` against reference vectors: torchmetrics' `FrechetInceptionDistance` fed the features
  through an identity extractor (its double-precision moments and matrix square root); against a
  statistics store's stored float64 moments (no vectors needed) ovi's own
  `ovi_plugins.fidelity.maths.frechet_distance`, tested equal to torchmetrics on the same features.
  The interval is a percentile bootstrap over the generated set (`maths.bootstrap_fd`).
- `kid`: torchmetrics' `KernelInceptionDistance` (unbiased MMD^2, cubic polynomial kernel
  `(x.y / d + 1)^3`, mean and std over random subsets), Binkowski et al. 2018.
- `prdc`: the `prdc` package of the paper's authors (Naeem et al. 2020), k nearest neighbours.

Heavy imports (torch, torchmetrics, prdc) happen inside `compute`; a missing one is one line
naming the `ovi[fidelity]` extra.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ovi_cli.api import MetricValue, PluginOption, ReferenceSet, SetMetric
from ovi_cli.errors import OviError

if TYPE_CHECKING:
    import numpy as np

EXTRA = "pip install 'ovi[fidelity]'"


def require(module: str, package: str) -> Any:
    """Import `module`, or a one-line error naming the extra that installs `package`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OviError(f"the fidelity metrics need {package}: {EXTRA}") from None


def identity_extractor(dim: int) -> Any:
    """An `nn.Module` that hands features through unchanged, shaped as torchmetrics' extractors are."""
    import torch

    class Identity(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_features = dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    return Identity()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The libraries' prints (prdc) and notes (torchmetrics' memory warning) kept off the terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _as_tensor(x: np.ndarray) -> Any:
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def torchmetrics_fd(features: np.ndarray, reference: np.ndarray) -> float:
    """torchmetrics' Frechet distance of two feature sets (identity extractor, float64)."""
    require("torch", "torch")
    image = require("torchmetrics.image.fid", "torchmetrics")
    with quiet():
        fid = image.FrechetInceptionDistance(feature=identity_extractor(features.shape[1]), normalize=False)
        fid.set_dtype(__import__("torch").float64)
        fid.update(_as_tensor(reference), real=True)
        fid.update(_as_tensor(features), real=False)
        return float(fid.compute())


class FrechetDistance(SetMetric):
    name = "fd"
    description = "Frechet distance of Gaussians fitted to the features (lower is better), bootstrap interval"
    min_samples = 2
    needs_vectors = False
    options = (
        PluginOption("bootstrap", int, 100, "bootstrap resamples of the generated set for the 95% interval "
                     "(0: no interval)", minimum=0),
        PluginOption("seed", int, 0, "seed of the bootstrap"),
    )

    def compute(self, features: np.ndarray, reference: ReferenceSet) -> dict[str, MetricValue]:
        import numpy as np

        from ovi_plugins.fidelity.maths import bootstrap_fd, frechet_distance, mean_cov

        x = np.asarray(features, dtype=np.float64)
        if reference.mean is not None and reference.cov is not None:
            mu_r, cov_r = np.asarray(reference.mean, np.float64), np.asarray(reference.cov, np.float64)
            mu, cov = mean_cov(x)
            value, how = frechet_distance(mu, cov, mu_r, cov_r), "ovi (reference moments)"
        else:
            mu_r, cov_r = mean_cov(reference.features)
            value, how = torchmetrics_fd(x, np.asarray(reference.features)), "torchmetrics"
        details: dict[str, Any] = {"computed_by": how, "dim": int(x.shape[1])}
        low = high = None
        if self.options.get("bootstrap", 100) >= 2:
            iv = bootstrap_fd(x, mu_r, cov_r, resamples=int(self.options["bootstrap"]), seed=int(self.options["seed"]),
                              value=value)
            low, high = iv.low, iv.high
            details.update(interval="95% bootstrap over the generated set, bias-shifted", bootstrap_std=iv.std,
                           resamples=iv.resamples)
        return {"fd": MetricValue(value, low, high, n=len(x), n_ref=reference.count, details=details)}


class KernelDistance(SetMetric):
    name = "kid"
    description = "Kernel distance (unbiased MMD^2, cubic kernel): mean and std over random subsets"
    min_samples = 2
    options = (
        PluginOption("subsets", int, 100, "random subsets averaged over", minimum=1),
        PluginOption("subset_size", int, 1000, "images per subset (capped at the smaller set's size)", minimum=2),
        PluginOption("seed", int, 0, "seed of the subsets"),
    )

    def subset_size(self, n: int, n_ref: int) -> int:
        return min(int(self.options.get("subset_size", 1000)), n, n_ref)

    def compute(self, features: np.ndarray, reference: ReferenceSet) -> dict[str, MetricValue]:
        import numpy as np

        torch = require("torch", "torch")
        kid_mod = require("torchmetrics.image.kid", "torchmetrics")
        x = np.asarray(features, dtype=np.float64)
        ref = np.asarray(reference.features, dtype=np.float64)
        size = self.subset_size(len(x), len(ref))
        subsets = int(self.options.get("subsets", 100))
        state = torch.random.get_rng_state()
        try:
            with quiet():
                kid = kid_mod.KernelInceptionDistance(feature=identity_extractor(x.shape[1]), subsets=subsets,
                                                      subset_size=size, normalize=False)
                kid.set_dtype(torch.float64)
                kid.update(_as_tensor(ref), real=True)
                kid.update(_as_tensor(x), real=False)
                torch.manual_seed(int(self.options.get("seed", 0)))
                mean, std = (float(v) for v in kid.compute())
        finally:
            torch.random.set_rng_state(state)
        return {"kid": MetricValue(mean, mean - std, mean + std, n=len(x), n_ref=len(ref),
                                   details={"std": std, "subsets": subsets, "subset_size": size,
                                            "interval": "mean +- std over subsets", "computed_by": "torchmetrics"})}


class PrecisionRecall(SetMetric):
    name = "prdc"
    description = "precision, recall, density, coverage (Naeem et al. 2020) with k nearest neighbours"
    options = (PluginOption("k", int, 5, "nearest neighbours defining each ball (alias --nearest-k)", minimum=1),)

    @property
    def min_samples(self) -> int:  # type: ignore[override] - k decides it
        return int(self.options.get("k", 5)) + 1

    def compute(self, features: np.ndarray, reference: ReferenceSet) -> dict[str, MetricValue]:
        import numpy as np

        prdc = require("prdc", "prdc")
        k = int(self.options.get("k", 5))
        x = np.asarray(features, dtype=np.float32)
        ref = np.asarray(reference.features, dtype=np.float32)
        with quiet():
            out = prdc.compute_prdc(real_features=ref, fake_features=x, nearest_k=k)
        return {key: MetricValue(float(out[key]), n=len(x), n_ref=len(ref), details={"k": k, "computed_by": "prdc"})
                for key in ("precision", "recall", "density", "coverage")}
