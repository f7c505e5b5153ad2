"""The OVI optimiser: pseudo-tokens -> frozen vision tower -> image embedding close to the text.

One call optimises a batch of prompts, each with its own pseudo-tokens and seed. The loss is a
*sum* over prompts, and AdamW updates each element on its own, so a prompt's trajectory does not
depend on what else is in its batch (up to float rounding of batched matmuls).

Speed notes (see README, "Speed"):
- per-step records (cosine, loss, constraint terms) and the early-stopping state stay on the
  device; the host reads them only every `sync_every` steps (progress, early stopping) and once
  at the end (history). Indices of the prompts still running live on the device too, so no step
  copies an index tensor from the host.
- early stopping is per prompt: a prompt whose objective has not improved by `min_delta` for
  `patience` steps leaves the batch (its AdamW state is sliced away) and keeps its last iterate.
- `compile=True` runs the forward through `torch.compile`; a failure falls back to eager once,
  with one warning line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ProgressFn
from ovi_cli.devices import autocast_context
from ovi_cli.losses import cosine
from ovi_cli.pseudo_tokens import init_pseudo_tokens
from ovi_cli.schedule import get_schedule, lr_at
from ovi_cli.settings import OviSettings

# Early-stopping defaults (measured; see benchmarks/RESULTS.md): off unless asked for.
DEFAULT_PATIENCE = OviSettings.patience
DEFAULT_MIN_DELTA = OviSettings.min_delta
__all__ = ["OviSettings", "OviResult", "optimize", "patience_update"]


@dataclass
class OviResult:
    image_embeds: Tensor  # [B, D] float32 on CPU: the last iterate, raw projection output
    text_cosine: list[float]
    steps_used: list[int]
    history: list[dict[str, list[float]]] = field(default_factory=list)  # per prompt, per step
    constraint_finals: dict[str, list[float]] = field(default_factory=dict)  # unweighted terms
    seconds: float = 0.0
    compiled: bool = False  # True when the loop ran under torch.compile
    tokens: Tensor | None = None  # [B, P, token_width] float32 on CPU: the final pseudo-tokens


EmbedFn = Callable[[Tensor], Tensor]
WarnFn = Callable[[str], None]


# ---- small pure helpers ---------------------------------------------------------------------
def patience_update(loss: Tensor, best: Tensor, wait: Tensor, min_delta: float) -> tuple[Tensor, Tensor]:
    """One early-stopping update per prompt, on the device (no host sync).

    A prompt improves when `loss < best - min_delta`: then `best = loss` and `wait = 0`;
    otherwise `wait += 1`. Returns the new `(best, wait)`.
    """
    improved = loss < best - min_delta
    return torch.where(improved, loss, best), torch.where(improved, torch.zeros_like(wait), wait + 1)


def _default_warn(message: str) -> None:
    sys.stderr.write(f"ovi: warning: {message}\n")


def _compile(fn: EmbedFn) -> EmbedFn:
    return torch.compile(fn)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# ---- the optimiser --------------------------------------------------------------------------
def optimize(
    embed: EmbedFn,
    target: Tensor,
    *,
    token_width: int,
    seeds: Sequence[int],
    settings: OviSettings,
    constraints: Sequence[Constraint] = (),
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_progress: ProgressFn | None = None,
    on_warning: WarnFn | None = None,
) -> OviResult:
    """Run OVI for a batch: `embed` maps `[B, P, token_width]` pseudo-tokens to `[B, D]`.

    History per prompt: `text_cosine`, `loss` and one list per constraint (`<name>`, unweighted),
    one value per step, measured on the embedding before that step's update. Early stopping is
    checked at the sync points (every `sync_every` steps), so `steps_used` is a multiple of it
    (or `steps`).
    """
    start = time.perf_counter()
    device = torch.device(device)
    warn = on_warning or _default_warn
    target = target.to(device, torch.float32)
    batch = target.shape[0]
    steps = int(settings.steps)
    schedule = get_schedule(settings.schedule)
    lrs = [lr_at(i, steps, settings.lr, schedule) for i in range(steps)]  # depends on the step only
    sync_every = max(1, int(settings.sync_every))
    names = [c.name for c in constraints]

    tokens = init_pseudo_tokens(batch, settings.tokens, token_width, list(seeds), settings.init_std)
    tokens = tokens.to(device).requires_grad_(True)
    optimizer = _adamw(tokens, settings)

    # Per-step records stay on the device; the host reads them once at the end.
    cos_hist = torch.zeros(steps, batch, device=device)
    loss_hist = torch.zeros(steps, batch, device=device)
    term_hist = torch.zeros(len(constraints), steps, batch, device=device)

    rows = torch.arange(batch)  # original indices of the prompts still running (host copy)
    rows_dev = rows.to(device)  # ... and on the device, refreshed only when the batch shrinks
    full = True  # no prompt has left yet: records are written without an index
    tgt = target
    best = torch.full((batch,), float("inf"), device=device)
    wait = torch.zeros(batch, dtype=torch.long, device=device)
    final_tokens = torch.zeros(batch, settings.tokens, token_width)
    steps_used = [steps] * batch

    forward = embed
    compiled = False
    if settings.compile:
        try:
            forward = _compile(embed)
            compiled = True
        except Exception as exc:  # torch.compile itself unavailable
            warn(f"--compile is not available here ({_first_line(exc)}); running without it")

    def record(hist: Tensor, values: Tensor) -> None:
        if full:
            hist.copy_(values)
        else:
            hist.index_copy_(0, rows_dev, values)

    def objective(step: int, fwd: EmbedFn) -> tuple[Tensor, Tensor, list[Tensor]]:
        with autocast_context(device, dtype):
            emb = fwd(tokens)
        emb = emb.float()
        cos = cosine(emb, tgt)
        per_prompt = 1.0 - cos
        terms = []
        for c in constraints:
            term = c.term(emb, step, rows)
            terms.append(term)
            if c.weight != 0.0:
                per_prompt = per_prompt + c.weight * term
        per_prompt.sum().backward()
        return cos, per_prompt, terms

    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        if compiled:
            try:
                cos, per_prompt, terms = objective(step, forward)
            except Exception as exc:  # a compiler failure shows up on the first call(s)
                warn(f"--compile failed ({_first_line(exc)}); running without it")
                torch._dynamo.reset()
                forward, compiled = embed, False
                optimizer.zero_grad(set_to_none=True)
                cos, per_prompt, terms = objective(step, forward)
        else:
            cos, per_prompt, terms = objective(step, forward)
        for group in optimizer.param_groups:
            group["lr"] = lrs[step]
        optimizer.step()
        with torch.no_grad():
            record(cos_hist[step], cos.detach())
            record(loss_hist[step], per_prompt.detach())
            for i, term in enumerate(terms):
                record(term_hist[i, step], term.detach().float())
            if settings.patience > 0:
                best, wait = patience_update(per_prompt.detach(), best, wait, settings.min_delta)

        done = step + 1
        if done % sync_every and done != steps:
            continue
        # ---- sync point: the only host reads inside the loop ----
        if on_progress is not None:
            on_progress(done, steps, {"cos": cos.detach().cpu().tolist()})
        if settings.patience > 0 and done != steps:
            stop = (wait >= settings.patience).cpu()
            if bool(stop.any()):
                for j in rows[stop].tolist():
                    steps_used[j] = done
                final_tokens[rows[stop]] = tokens.detach()[stop.to(device)].float().cpu()
                keep = ~stop
                if not bool(keep.any()):
                    rows = rows[keep]
                    break
                keep_dev = keep.to(device)
                tokens, optimizer = _shrink(tokens, optimizer, keep_dev, settings)
                rows = rows[keep]
                rows_dev = rows.to(device)
                tgt, best, wait = tgt[keep_dev], best[keep_dev], wait[keep_dev]
                full = False

    if rows.numel():
        final_tokens[rows] = tokens.detach().float().cpu()
    with torch.no_grad(), autocast_context(device, dtype):
        final = embed(final_tokens.to(device))  # eager: a no-grad call would recompile
    final = final.float()
    final_cos = cosine(final, target).cpu().tolist()
    everyone = torch.arange(batch)
    with torch.no_grad():
        constraint_finals = {
            c.name: c.term(final, steps, everyone).float().cpu().tolist() for c in constraints
        }

    cos_np = cos_hist.cpu()
    loss_np = loss_hist.cpu()
    terms_np = term_hist.cpu()
    history = []
    for b in range(batch):
        n = steps_used[b]
        rec = {"text_cosine": cos_np[:n, b].tolist(), "loss": loss_np[:n, b].tolist()}
        for i, name in enumerate(names):
            rec[name] = terms_np[i, :n, b].tolist()
        history.append(rec)
    return OviResult(
        image_embeds=final.detach().cpu(),
        text_cosine=final_cos,
        steps_used=steps_used,
        history=history,
        constraint_finals=constraint_finals,
        seconds=time.perf_counter() - start,
        compiled=compiled,
        tokens=final_tokens,
    )


def _adamw(tokens: Tensor, settings: OviSettings) -> torch.optim.Optimizer:
    betas = get_schedule(settings.schedule).betas
    return torch.optim.AdamW([tokens], lr=settings.lr, betas=betas, weight_decay=settings.weight_decay)


def _shrink(tokens: Tensor, optimizer: torch.optim.Optimizer, keep: Tensor, settings: OviSettings):
    """Drop finished prompts from the batch, keeping AdamW's state of the others."""
    new_tokens = tokens.detach()[keep].clone().requires_grad_(True)
    new_opt = _adamw(new_tokens, settings)
    old_state = optimizer.state[tokens]
    new_opt.state[new_tokens] = {
        k: (v[keep].clone() if torch.is_tensor(v) and v.dim() > 0 else v)
        for k, v in old_state.items()
    }
    return new_tokens, new_opt
