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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ovi_cli.api import Constraint, ProgressFn
from ovi_cli.devices import autocast_context
from ovi_cli.losses import cosine
from ovi_cli.plugin_checks import check_term
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
    """Without a warn callback the library warns the Python way (a caller may filter it); it never prints."""
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


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

    The learning rate of step i is `lr_at(i, steps, lr, schedule)` (`ovi_cli.schedule`), Adam's
    betas are the schedule's. History per prompt: `text_cosine`, `loss` and one list per
    constraint (`<name>`, unweighted), one value per step, measured on the embedding before that
    step's update. Early stopping is checked at the sync points (every `sync_every` steps), so
    `steps_used` is a multiple of it (or `steps`).
    """
    start = time.perf_counter()
    run = _Run(embed, target, token_width, seeds, settings, constraints, torch.device(device), dtype,
               on_warning or _default_warn)
    for step in range(run.steps):
        cos = run.step(step)
        done = step + 1
        if done % run.sync_every and done != run.steps:
            continue
        # ---- sync point: the only host reads inside the loop ----
        if on_progress is not None:
            on_progress(done, run.steps, {"cos": cos.detach().cpu().tolist()})
        if settings.patience > 0 and done != run.steps and not run.stop_finished(done):
            break  # every prompt has stopped
    return run.result(time.perf_counter() - start)


class _Run:
    """The state of one `optimize` call: the running prompts' tokens, AdamW and the records.

    Per-step records live on the device; `rows` are the original indices of the prompts still
    running (on the host, and on the device, refreshed only when the batch shrinks).
    """

    def __init__(self, embed, target, token_width, seeds, settings, constraints, device, dtype, warn):
        self.embed, self.settings, self.constraints = embed, settings, list(constraints)
        self.device, self.dtype, self.warn = device, dtype, warn
        self.target = target.to(device, torch.float32)
        batch = self.batch = self.target.shape[0]
        self.steps = int(settings.steps)
        self.sync_every = max(1, int(settings.sync_every))
        schedule = get_schedule(settings.schedule)
        self.lrs = [lr_at(i, self.steps, settings.lr, schedule) for i in range(self.steps)]  # step only

        tokens = init_pseudo_tokens(batch, settings.tokens, token_width, list(seeds), settings.init_std)
        self.tokens = tokens.to(device).requires_grad_(True)
        self.optimizer = _adamw(self.tokens, settings)
        self.cos_hist = torch.zeros(self.steps, batch, device=device)
        self.loss_hist = torch.zeros(self.steps, batch, device=device)
        self.term_hist = torch.zeros(len(self.constraints), self.steps, batch, device=device)
        self.rows = torch.arange(batch)
        self.rows_dev = self.rows.to(device)
        self.full = True  # no prompt has left yet: records are written without an index
        self.tgt = self.target
        self.best = torch.full((batch,), float("inf"), device=device)
        self.wait = torch.zeros(batch, dtype=torch.long, device=device)
        self.final_tokens = torch.zeros(batch, settings.tokens, token_width)
        self.steps_used = [self.steps] * batch

        self.forward, self.compiled = embed, False
        if settings.compile:
            try:
                self.forward, self.compiled = _compile(embed), True
            except Exception as exc:  # torch.compile itself unavailable
                warn(f"--compile is not available here ({_first_line(exc)}); running without it")

    def _record(self, hist: Tensor, values: Tensor) -> None:
        if self.full:
            hist.copy_(values)
        else:
            hist.index_copy_(0, self.rows_dev, values)

    def _objective(self, step: int) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Forward, per-prompt objective, backward: (cos, objective, unweighted constraint terms)."""
        with autocast_context(self.device, self.dtype):
            emb = self.forward(self.tokens)
        emb = emb.float()
        cos = cosine(emb, self.tgt)
        per_prompt = 1.0 - cos
        terms = []
        for c in self.constraints:
            term = check_term(c, c.term(emb, step, self.rows), emb.shape[0], step)
            terms.append(term)
            if c.weight != 0.0:
                per_prompt = per_prompt + c.weight * term
        per_prompt.sum().backward()
        return cos, per_prompt, terms

    def step(self, step: int) -> Tensor:
        """One AdamW step at the scheduled lr, recorded on the device; returns the cosines."""
        self.optimizer.zero_grad(set_to_none=True)
        try:
            cos, per_prompt, terms = self._objective(step)
        except Exception as exc:  # a compiler failure shows up on the first call(s)
            if not self.compiled:
                raise
            self.warn(f"--compile failed ({_first_line(exc)}); running without it")
            torch._dynamo.reset()
            self.forward, self.compiled = self.embed, False
            self.optimizer.zero_grad(set_to_none=True)
            cos, per_prompt, terms = self._objective(step)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lrs[step]
        self.optimizer.step()
        with torch.no_grad():
            self._record(self.cos_hist[step], cos.detach())
            self._record(self.loss_hist[step], per_prompt.detach())
            for i, term in enumerate(terms):
                self._record(self.term_hist[i, step], term.detach().float())
            if self.settings.patience > 0:
                self.best, self.wait = patience_update(per_prompt.detach(), self.best, self.wait,
                                                       self.settings.min_delta)
        return cos

    def stop_finished(self, done: int) -> bool:
        """Early stopping at a sync point: finished prompts keep their tokens and leave the batch.

        Returns False when no prompt is left running.
        """
        stop = (self.wait >= self.settings.patience).cpu()
        if not bool(stop.any()):
            return True
        for j in self.rows[stop].tolist():
            self.steps_used[j] = done
        self.final_tokens[self.rows[stop]] = self.tokens.detach()[stop.to(self.device)].float().cpu()
        keep = ~stop
        self.rows = self.rows[keep]
        if not bool(keep.any()):
            return False
        keep_dev = keep.to(self.device)
        self.tokens, self.optimizer = _shrink(self.tokens, self.optimizer, keep_dev, self.settings)
        self.rows_dev = self.rows.to(self.device)
        self.tgt, self.best, self.wait = self.tgt[keep_dev], self.best[keep_dev], self.wait[keep_dev]
        self.full = False
        return True

    def result(self, seconds: float) -> OviResult:
        """The last iterates' embeddings (one eager no-grad forward), final terms and the history."""
        if self.rows.numel():
            self.final_tokens[self.rows] = self.tokens.detach().float().cpu()
        with torch.no_grad(), autocast_context(self.device, self.dtype):
            final = self.embed(self.final_tokens.to(self.device))  # eager: a no-grad call would recompile
        final = final.float()
        everyone = torch.arange(self.batch)
        with torch.no_grad():
            finals = {c.name: c.term(final, self.steps, everyone).float().cpu().tolist() for c in self.constraints}
        cos_np, loss_np, terms_np = self.cos_hist.cpu(), self.loss_hist.cpu(), self.term_hist.cpu()
        history = []
        for b in range(self.batch):
            n = self.steps_used[b]
            rec = {"text_cosine": cos_np[:n, b].tolist(), "loss": loss_np[:n, b].tolist()}
            for i, c in enumerate(self.constraints):
                rec[c.name] = terms_np[i, :n, b].tolist()
            history.append(rec)
        return OviResult(
            image_embeds=final.detach().cpu(),
            text_cosine=cosine(final, self.target).cpu().tolist(),
            steps_used=self.steps_used,
            history=history,
            constraint_finals=finals,
            seconds=seconds,
            compiled=self.compiled,
            tokens=self.final_tokens,
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
