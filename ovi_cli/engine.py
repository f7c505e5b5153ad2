"""The OVI optimiser: pseudo-tokens -> frozen vision tower -> image embedding close to the text.

One call optimises a batch of prompts, each with its own pseudo-tokens and seed. The loss is a
*sum* over prompts, and AdamW updates each element on its own, so a prompt's trajectory does not
depend on what else is in its batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ProgressFn
from ovi_cli.devices import autocast_context
from ovi_cli.losses import cosine, ovi_loss
from ovi_cli.pseudo_tokens import init_pseudo_tokens


@dataclass
class OviSettings:
    """OVI hyper-parameters; defaults follow the paper and the reference implementation."""

    tokens: int = 6
    steps: int = 500
    lr: float = 2e-2
    weight_decay: float = 0.01
    init_std: float = 0.02
    patience: int = 0  # stop a prompt after this many steps without improvement; 0 = never
    min_delta: float = 1e-4  # what counts as an improvement of the objective
    sync_every: int = 10  # device-to-host copies (progress, early stopping) every K steps


@dataclass
class OviResult:
    image_embeds: Tensor  # [B, D] float32 on CPU: the last iterate, raw projection output
    text_cosine: list[float]
    steps_used: list[int]
    history: list[dict[str, list[float]]] = field(default_factory=list)  # per prompt, per step
    constraint_finals: dict[str, list[float]] = field(default_factory=dict)  # unweighted terms
    seconds: float = 0.0


EmbedFn = Callable[[Tensor], Tensor]


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
) -> OviResult:
    """Run OVI for a batch: `embed` maps `[B, P, token_width]` pseudo-tokens to `[B, D]`.

    History per prompt: `text_cosine`, `loss` and one list per constraint (`<name>`, unweighted),
    one value per step, measured on the embedding before that step's update.
    """
    start = time.perf_counter()
    device = torch.device(device)
    target = target.to(device, torch.float32)
    batch = target.shape[0]
    steps = int(settings.steps)
    names = [c.name for c in constraints]

    tokens = init_pseudo_tokens(batch, settings.tokens, token_width, list(seeds), settings.init_std)
    tokens = tokens.to(device).requires_grad_(True)
    optimizer = torch.optim.AdamW([tokens], lr=settings.lr, weight_decay=settings.weight_decay)

    # Per-step records stay on the device; they are copied to the host every `sync_every` steps.
    cos_hist = torch.zeros(steps, batch, device=device)
    loss_hist = torch.zeros(steps, batch, device=device)
    term_hist = torch.zeros(len(constraints), steps, batch, device=device)

    active = torch.arange(batch)  # original indices of the prompts still being optimised
    final_tokens = torch.zeros(batch, settings.tokens, token_width)
    steps_used = [steps] * batch
    best = torch.full((batch,), float("inf"))
    best_step = torch.zeros(batch, dtype=torch.long)
    synced = 0

    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(device, dtype):
            emb = embed(tokens)
        emb = emb.float()
        tgt = target[active.to(device)]
        per_prompt = ovi_loss(emb, tgt)
        with torch.no_grad():
            cos_hist[step, active] = 1.0 - per_prompt.detach()
        for i, c in enumerate(constraints):
            term = c.term(emb, step, active)
            with torch.no_grad():
                term_hist[i, step, active] = term.detach().float()
            if c.weight != 0.0:
                per_prompt = per_prompt + c.weight * term
        with torch.no_grad():
            loss_hist[step, active] = per_prompt.detach()
        per_prompt.sum().backward()
        optimizer.step()

        done = step + 1
        if done % settings.sync_every and done != steps:
            continue
        chunk_cos = cos_hist[synced:done].cpu()
        chunk_loss = loss_hist[synced:done].cpu()
        if on_progress is not None:
            on_progress(done, steps, {"cos": chunk_cos[-1, active].tolist()})
        if settings.patience > 0 and done != steps:
            stop = _update_patience(chunk_loss, synced, active, best, best_step, settings)
            if stop.any():
                keep = ~stop
                for j in active[stop].tolist():
                    steps_used[j] = done
                final_tokens[active[stop]] = tokens.detach()[stop].cpu()
                if not keep.any():
                    active = active[keep]
                    synced = done
                    break
                tokens, optimizer = _shrink(tokens, optimizer, keep, settings)
                active = active[keep]
        synced = done

    if active.numel():
        final_tokens[active] = tokens.detach().cpu()
    with torch.no_grad(), autocast_context(device, dtype):
        final = embed(final_tokens.to(device))
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
    result = OviResult(
        image_embeds=final.detach().cpu(),
        text_cosine=final_cos,
        steps_used=steps_used,
        history=history,
        constraint_finals=constraint_finals,
        seconds=time.perf_counter() - start,
    )
    return result


def _update_patience(
    chunk_loss: Tensor, offset: int, active: Tensor, best: Tensor, best_step: Tensor,
    settings: OviSettings,
) -> Tensor:
    """Walk the synced losses of the active prompts; True where a prompt has stalled."""
    losses = chunk_loss[:, active]
    for k in range(losses.shape[0]):
        cur = losses[k]
        improved = cur < best[active] - settings.min_delta
        idx = active[improved]
        best[idx] = cur[improved]
        best_step[idx] = offset + k
    last = offset + losses.shape[0] - 1
    return (last - best_step[active]) >= settings.patience


def _shrink(tokens: Tensor, optimizer: torch.optim.Optimizer, keep: Tensor, settings: OviSettings):
    """Drop finished prompts from the batch, keeping AdamW's state of the others."""
    keep_dev = keep.to(tokens.device)
    new_tokens = tokens.detach()[keep_dev].clone().requires_grad_(True)
    new_opt = torch.optim.AdamW([new_tokens], lr=settings.lr, weight_decay=settings.weight_decay)
    old_state = optimizer.state[tokens]
    new_opt.state[new_tokens] = {
        k: (v[keep_dev].clone() if torch.is_tensor(v) and v.dim() > 0 else v)
        for k, v in old_state.items()
    }
    return new_tokens, new_opt
