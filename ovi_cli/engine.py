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
from pathlib import Path

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ProgressFn
from ovi_cli.devices import autocast_context
from ovi_cli.losses import cosine
from ovi_cli.plugin_checks import check_term
from ovi_cli.pseudo_tokens import init_pseudo_tokens

# Early-stopping defaults (measured; see README, "Speed"): off unless asked for.
DEFAULT_PATIENCE = 0
DEFAULT_MIN_DELTA = 1e-4
# `--dtype auto` on a CPU: bfloat16 autocast only where the CPU computes bf16 natively and the
# vision tower is wide enough for that to pay off (measured on AMD EPYC / AVX512-BF16: slower at
# width 32-128, 1.2-2.6x faster from width 256 up); float32 otherwise.
CPU_BF16_MIN_WIDTH = 256
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass
class OviSettings:
    """OVI hyper-parameters; defaults follow the paper and the reference implementation."""

    tokens: int = 6
    steps: int = 500
    lr: float = 2e-2
    weight_decay: float = 0.01
    init_std: float = 0.02
    patience: int = DEFAULT_PATIENCE  # stop a prompt after this many steps without improvement; 0 = never
    min_delta: float = DEFAULT_MIN_DELTA  # what counts as an improvement of the objective
    sync_every: int = 10  # device-to-host copies (progress, early stopping) every K steps
    compile: bool = False  # torch.compile the forward (falls back to eager with a warning)


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


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def auto_dtype(device: torch.device | str, token_width: int, flags: set[str] | None = None) -> torch.dtype:
    """OVI's compute dtype for `--dtype auto`.

    bfloat16 autocast on CUDA; on a CPU bfloat16 only with native bf16 instructions and a vision
    tower at least `CPU_BF16_MIN_WIDTH` wide; float32 otherwise (and on MPS).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and token_width >= CPU_BF16_MIN_WIDTH:
        flags = cpu_flags() if flags is None else flags
        if any(f in flags for f in CPU_BF16_FLAGS):
            return torch.bfloat16
    return torch.float32


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
            term = check_term(c, c.term(emb, step, rows), emb.shape[0], step)
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
    return torch.optim.AdamW([tokens], lr=settings.lr, weight_decay=settings.weight_decay)


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
