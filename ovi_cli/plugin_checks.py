"""Checks of what plugins hand back, where ovi consumes it: one line naming the plugin and the value.

A third-party constraint or prior can return anything; without these checks a scalar term ends in
a 40-line traceback deep in the optimiser, a detached term is silently ignored, and a NaN makes a
black image. Each check is cheap: shapes and dtypes every call (no device sync), finiteness once
(the first OVI step, and the prior's final output).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from ovi_cli.errors import OviError, first_line

T = TypeVar("T")


def plugin_name(kind: str, name: str, obj: Any) -> str:
    """`constraint 'nn' (ovi_plugins.constraints)`: the registered name and the module it came from."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{kind} {name!r} ({cls.__module__})"


def described(value: Any) -> str:
    """What a plugin returned, in a few words."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}" if value is not None else "None"


def check_term(constraint: Any, term: Any, batch: int, step: int) -> Tensor:
    """A constraint's `term`: a float tensor `[batch]`, differentiable when weighted, finite at step 0."""
    def who() -> str:  # named only on failure: this runs every OVI step
        return plugin_name("constraint", getattr(constraint, "name", "?"), constraint)

    if not isinstance(term, Tensor) or not term.dtype.is_floating_point or tuple(term.shape) != (batch,):
        raise OviError(f"{who()}: term() returned {described(term)}; it must return a float tensor of shape [{batch}] "
                       "(one value per prompt)")
    weighted = float(getattr(constraint, "weight", 1.0)) != 0.0
    if weighted and torch.is_grad_enabled() and not term.requires_grad:
        raise OviError(f"{who()}: term() returned a value without gradient (computed with .detach(), numpy or "
                       "under no_grad?); OVI cannot optimise a term it cannot differentiate")
    if step == 0 and not bool(torch.isfinite(term.detach()).all()):
        raise OviError(f"{who()}: term() returned NaN or infinite values at the first OVI step "
                       f"({term.detach().float().cpu().tolist()[:4]})")
    return term


def check_prior_output(name: str, prior: Any, out: Any, prompts: Sequence[str], dim: int | None) -> None:
    """A prior's `embed` result: `[B, D]` float image embeddings, finite, and one record per prompt."""
    who = plugin_name("prior", name, prior)
    emb = getattr(out, "image_embeds", None)
    batch = len(prompts)
    want = f"[{batch}, {dim if dim is not None else 'D'}]"
    if not isinstance(emb, Tensor) or not emb.dtype.is_floating_point or emb.dim() != 2 or emb.shape[0] != batch \
            or (dim is not None and emb.shape[1] != dim):
        raise OviError(f"{who}: embed() returned image_embeds as {described(emb)}; expected a float tensor {want}")
    records = getattr(out, "records", None)
    if not isinstance(records, list) or (records and len(records) != batch):
        raise OviError(f"{who}: embed() returned {described(records)} as records; expected a list of {batch} dicts")
    finite = torch.isfinite(emb.detach()).all(dim=1).cpu().tolist()
    if all(finite):
        return
    i = finite.index(False)
    culprits = _non_finite_constraints(records[i] if records else {})
    cause = (f"constraint {culprits[0]!r} gave a non-finite value" if culprits else
             "the optimisation diverged")
    raise OviError(f"{who} gave NaN or infinite image embeddings for prompt {i + 1} ({prompts[i][:40]!r}): {cause}; "
                   "lower --lr / --weight-decay or the constraint weights (nothing was written)")


def _non_finite_constraints(record: dict) -> list[str]:
    out = []
    for cname, values in (record.get("constraint_values") or {}).items():
        final = values.get("final") if isinstance(values, dict) else None
        if isinstance(final, float) and not math.isfinite(final):
            out.append(cname)
    return out


def start_plugin(kind: str, name: str, cls: Any, factory: Callable[[], T]) -> T:
    """`factory()` (a plugin's constructor or `load`); any failure but an `OviError` is one line naming it."""
    try:
        return factory()
    except (OviError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin's __init__ must not end ovi silently
        raise OviError(f"{plugin_name(kind, name, cls)} failed to start: {first_line(exc)}") from exc
