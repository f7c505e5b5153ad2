"""OVI's learning-rate schedules, as pure functions (no torch): the `paper` and `fast` presets.

A schedule is a shape over the run: an optional linear warm-up, then constant, cosine or linear
decay to `final_fraction` of the peak. The peak is `peak_factor * lr` (the `--lr` of the run), so
`--lr` keeps one meaning across schedules; the warm-up is a fraction of the run's steps, so
`--steps` stretches or shrinks the same shape. Each preset also names its own step count
(used when `steps` is not given) and its Adam betas.

- `paper`: the paper's and the reference implementation's setting: 500 steps at the constant
  `lr` (2e-2), betas (0.9, 0.999).
- `fast`: 160 steps; linear warm-up over 8 steps to 3 x lr (6e-2), held there for three quarters
  of the rest, then cosine decay to 0; Adam betas (0.9, 0.9). Same final cosine as `paper` in a
  third of the steps (docs/speed.md has the measurements and where it falls short).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DECAYS = ("constant", "cosine", "linear")


@dataclass(frozen=True)
class Schedule:
    """The shape of the learning rate over one OVI run (see `lr_at`)."""

    name: str
    steps: int  # the preset's step count, used when the run does not give one
    peak_factor: float = 1.0  # peak lr = peak_factor * lr
    warmup: float = 0.0  # fraction of the run's steps spent warming up linearly
    decay: str = "constant"  # after the warm-up: constant | cosine | linear
    final_fraction: float = 0.0  # lr at the end of the decay, as a fraction of the peak
    hold: float = 0.0  # fraction of the post-warm-up steps held at the peak before the decay starts
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; choose one of {', '.join(DECAYS)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a fraction of the run in [0, 1), got {self.warmup}")
        if not 0.0 <= self.hold < 1.0:
            raise ValueError(f"hold is a fraction of the run after the warm-up in [0, 1), got {self.hold}")
        if self.steps < 1 or self.peak_factor <= 0 or not 0.0 <= self.final_fraction <= 1.0:
            raise ValueError(f"invalid schedule {self!r}")


SCHEDULES: dict[str, Schedule] = {
    "paper": Schedule("paper", steps=500),
    # measured in benchmarks/schedule_search.py (benchmarks/RESULTS.md, docs/speed.md): Adam's beta2
    # 0.9 instead of 0.999 is what matters most (the gradient shrinks ~15x in the first 50 steps, and
    # a long memory of the early large gradients makes later steps tiny); a 3x peak held for most of
    # the run keeps the slow part moving; the cosine tail settles stiff constraints (Mahalanobis).
    "fast": Schedule("fast", steps=160, peak_factor=3.0, warmup=0.05, decay="cosine", final_fraction=0.0,
                     hold=0.75, betas=(0.9, 0.9)),
}
DEFAULT_SCHEDULE = "paper"


def get_schedule(schedule: str | Schedule) -> Schedule:
    """A preset by name (`paper`, `fast`), or a `Schedule` passed through unchanged."""
    if isinstance(schedule, Schedule):
        return schedule
    try:
        return SCHEDULES[schedule]
    except KeyError:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}") from None


def warmup_steps(schedule: Schedule, steps: int) -> int:
    """Warm-up length in steps: `round(warmup * steps)`, at most `steps - 1`."""
    return min(max(0, round(schedule.warmup * steps)), max(0, steps - 1))


def lr_at(step: int, steps: int, lr: float, schedule: str | Schedule) -> float:
    """The learning rate of step `step` (0-based) of a `steps`-step run with base lr `lr`.

    With `peak = peak_factor * lr`, `W = warmup_steps(schedule, steps)`:
    - warm-up, `step < W`: `peak * (step + 1) / W` (the first step is not wasted at lr 0);
    - then with progress `p = (step - W) / (steps - W)` in [0, 1): `peak` while `p < hold`;
      after it, with `q = (p - hold) / (1 - hold)` and `f = final_fraction`: constant `peak`;
      cosine `peak * (f + (1 - f) * (1 + cos(pi q)) / 2)`; linear `peak * (f + (1 - f) * (1 - q))`.
    """
    s = get_schedule(schedule)
    if not 0 <= step < steps:
        raise ValueError(f"step {step} is outside a run of {steps} steps")
    peak = s.peak_factor * lr
    w = warmup_steps(s, steps)
    if step < w:
        return peak * (step + 1) / w
    p = (step - w) / (steps - w)
    if s.decay == "constant" or p < s.hold:
        return peak
    q = (p - s.hold) / (1.0 - s.hold)
    f = s.final_fraction
    shape = (1.0 + math.cos(math.pi * q)) / 2.0 if s.decay == "cosine" else 1.0 - q
    return peak * (f + (1.0 - f) * shape)


def lr_curve(steps: int, lr: float, schedule: str | Schedule) -> list[float]:
    """`[lr_at(0), ..., lr_at(steps - 1)]`."""
    return [lr_at(i, steps, lr, schedule) for i in range(steps)]
