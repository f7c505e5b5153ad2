"""Learning-rate schedules (exact values), the OVI settings' single source of defaults, and the
engine applying a schedule without breaking "a prompt in a batch == the prompt alone"."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ovi_cli.engine import optimize
from ovi_cli.schedule import SCHEDULES, Schedule, get_schedule, lr_at, lr_curve, warmup_steps
from ovi_cli.settings import GenSettings, OviSettings


# ---- the pure schedule ----------------------------------------------------------------------
def test_paper_schedule_is_the_constant_lr():
    assert lr_curve(500, 2e-2, "paper") == [2e-2] * 500
    assert get_schedule("paper").betas == (0.9, 0.999)
    assert get_schedule("paper").steps == 500


def test_linear_warmup_then_linear_decay_exact():
    s = Schedule("t", steps=8, peak_factor=2.0, warmup=0.25, decay="linear", final_fraction=0.5)
    assert warmup_steps(s, 8) == 2
    # warm-up: peak * (step + 1) / W; then p = (step - 2) / 6, peak * (0.5 + 0.5 * (1 - p))
    lrs = lr_curve(8, 1.0, s)
    assert [lrs[i] for i in (0, 1, 2, 5)] == [1.0, 2.0, 2.0, 1.5]  # dyadic values: exact
    assert lrs[3] == pytest.approx(1 + 5 / 6, rel=1e-15)
    assert lrs[4] == pytest.approx(1 + 4 / 6, rel=1e-15)
    assert lrs[7] == pytest.approx(1 + 1 / 6, rel=1e-15)


def test_cosine_decay_exact():
    s = Schedule("t", steps=6, warmup=1 / 3, decay="cosine", final_fraction=0.0)
    lrs = lr_curve(6, 0.04, s)
    assert lrs[:3] == [0.02, 0.04, 0.04]  # W = 2: 0.04 * 1/2, 0.04 * 2/2; then p = 0 -> the peak
    assert lrs[3] == pytest.approx(0.04 * (1 + 2 ** -0.5) / 2, rel=1e-15)  # p = 1/4
    assert lrs[4] == pytest.approx(0.02, rel=1e-15)  # p = 1/2
    assert lrs[5] == pytest.approx(0.04 * (1 - 2 ** -0.5) / 2, rel=1e-15)  # p = 3/4: never exactly 0


def test_warmup_length_rounds_and_leaves_one_step():
    s = Schedule("t", steps=10, warmup=0.9)
    assert warmup_steps(s, 10) == 9 and warmup_steps(s, 1) == 0
    assert lr_curve(1, 0.5, s) == [0.5]


def test_schedule_validation():
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("slow")
    with pytest.raises(ValueError, match="unknown decay"):
        Schedule("t", steps=10, decay="step")
    with pytest.raises(ValueError, match="warmup"):
        Schedule("t", steps=10, warmup=1.0)
    with pytest.raises(ValueError, match="outside"):
        lr_at(10, 10, 0.1, "paper")


def test_fast_preset_exact_values():
    fast = get_schedule("fast")
    assert (fast.steps, fast.betas, warmup_steps(fast, 160)) == (160, (0.9, 0.9), 8)
    lrs = lr_curve(160, 0.02, "fast")
    peak = 3.0 * 0.02
    assert lrs[:8] == [peak * (i + 1) / 8 for i in range(8)]  # warm-up over 8 steps
    assert lrs[8:123] == [peak] * 115  # held at the peak while p = (step - 8) / 152 <= 3/4
    assert lrs[123] == pytest.approx(peak * (1 + math.cos(math.pi * (115 / 152 - 0.75) / 0.25)) / 2, rel=1e-12)
    assert lrs[159] == pytest.approx(peak * (1 + math.cos(math.pi * (151 / 152 - 0.75) / 0.25)) / 2, rel=1e-12)
    assert lrs[159] < 2e-4


def test_hold_then_linear_decay_exact():
    s = Schedule("t", steps=10, decay="linear", hold=0.5, final_fraction=0.0)
    # no warm-up: p = step / 10; held while p < 0.5, then q = (p - 0.5) / 0.5 and lr = 1 - q
    assert lr_curve(10, 1.0, s) == [1.0] * 6 + [1.0 - (0.6 - 0.5) / 0.5, 1.0 - (0.7 - 0.5) / 0.5,
                                                 1.0 - (0.8 - 0.5) / 0.5, 1.0 - (0.9 - 0.5) / 0.5]


def test_fast_preset_shape():
    fast = get_schedule("fast")
    assert fast.steps <= 500 // 3
    lrs = lr_curve(fast.steps, 2e-2, fast)
    w = warmup_steps(fast, fast.steps)
    peak = fast.peak_factor * 2e-2
    assert lrs[w - 1] == pytest.approx(peak) and max(lrs) == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[w:], lrs[w + 1:]))  # decays after the warm-up
    assert lrs[-1] < 0.01 * peak + fast.final_fraction * peak


# ---- settings: OVI's defaults live once -------------------------------------------------------
def test_gen_settings_are_ovi_settings():
    g = GenSettings()
    assert isinstance(g, OviSettings)
    ovi_fields = {f.name: f.default for f in dataclasses.fields(OviSettings)}
    gen_fields = {f.name: f.default for f in dataclasses.fields(GenSettings)}
    assert all(gen_fields[k] == v for k, v in ovi_fields.items())
    assert (g.tokens, g.steps, g.lr, g.weight_decay, g.schedule) == (6, 500, 2e-2, 0.01, "paper")


def test_steps_default_to_the_schedules():
    assert OviSettings(schedule="fast").steps == SCHEDULES["fast"].steps
    assert GenSettings(schedule="fast", steps=90).steps == 90
    custom = Schedule("custom", steps=33)
    g = GenSettings(schedule=custom)
    assert g.steps == 33 and g.to_dict()["schedule"]["steps"] == 33


# ---- the engine applies it ----------------------------------------------------------------------
def _targets(encoders, n=4):
    return torch.randn(n, encoders.embed_dim, generator=torch.Generator().manual_seed(42))


def _fast(encoders, rows, seeds, **kw):
    settings = OviSettings(**{"tokens": 2, "steps": 30, "schedule": "fast", "sync_every": 5, **kw})
    return optimize(encoders.encode_pseudo_tokens, _targets(encoders)[rows], token_width=encoders.token_width,
                    seeds=seeds, settings=settings, device="cpu")


def test_engine_sets_the_scheduled_lr_every_step(encoders, monkeypatch):
    seen: list[tuple[float, tuple]] = []
    step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append((self.param_groups[0]["lr"], self.param_groups[0]["betas"]))
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    _fast(encoders, [0], [1], steps=20, lr=0.03)
    assert [lr for lr, _ in seen] == lr_curve(20, 0.03, "fast")
    assert {b for _, b in seen} == {get_schedule("fast").betas}


def test_paper_schedule_is_the_plain_adamw_loop_bit_for_bit(encoders):
    """The engine with `paper` == AdamW at a constant lr on sum(1 - cos): nothing else changed."""
    targets = _targets(encoders, 2)
    res = optimize(encoders.encode_pseudo_tokens, targets, token_width=encoders.token_width, seeds=[3, 4],
                   settings=OviSettings(tokens=2, steps=12), device="cpu")
    from ovi_cli.pseudo_tokens import init_pseudo_tokens

    tokens = init_pseudo_tokens(2, 2, encoders.token_width, [3, 4]).requires_grad_(True)
    opt = torch.optim.AdamW([tokens], lr=2e-2, weight_decay=0.01)
    for _ in range(12):
        opt.zero_grad(set_to_none=True)
        emb = encoders.encode_pseudo_tokens(tokens)
        (1.0 - torch.nn.functional.cosine_similarity(emb.float(), targets, dim=-1)).sum().backward()
        opt.step()
    assert torch.equal(res.tokens, tokens.detach())


def test_fast_schedule_keeps_batch_equal_to_alone(encoders):
    kw = {"patience": 5, "min_delta": 2e-3}
    batch = _fast(encoders, [0, 1, 2, 3], [10, 11, 12, 13], **kw)
    for i in range(4):
        alone = _fast(encoders, [i], [10 + i], **kw)
        assert alone.steps_used[0] == batch.steps_used[i]
        assert torch.allclose(alone.image_embeds[0], batch.image_embeds[i], atol=1e-5, rtol=1e-4)
