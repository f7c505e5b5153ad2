"""The pure pseudo-token functions (exact values) and the OVI engine's behaviour on a tiny tower."""

from __future__ import annotations

import pytest
import torch

from ovi_cli import engine
from ovi_cli.devices import resolve_dtype
from ovi_cli.engine import OviSettings, optimize, patience_update
from ovi_cli.pseudo_tokens import (
    encode_pseudo_tokens,
    expand_tokens,
    init_pseudo_tokens,
    token_embeddings,
)


# ---- pure functions, exact values -----------------------------------------------------------
def test_init_pseudo_tokens_row_depends_only_on_its_seed():
    out = init_pseudo_tokens(2, 3, 4, [7, 11], std=0.5)
    assert out.shape == (2, 3, 4)
    expected = torch.randn(3, 4, generator=torch.Generator().manual_seed(11)) * 0.5
    assert torch.equal(out[1], expected)
    alone = init_pseudo_tokens(1, 3, 4, [11], std=0.5)
    assert torch.equal(alone[0], out[1])
    with pytest.raises(ValueError, match="one seed per prompt"):
        init_pseudo_tokens(2, 3, 4, [1], std=0.5)


def test_expand_tokens_nearest_blocks():
    tokens = torch.tensor([[[1.0], [2.0], [3.0]]])  # [1, P=3, D=1]
    # position i takes token floor(i * 3 / 4): 0, 0, 1, 2
    assert expand_tokens(tokens, 4).flatten().tolist() == [1.0, 1.0, 2.0, 3.0]
    two = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])  # P=2 over 6 positions: blocks of 3
    assert expand_tokens(two, 6)[0, :, 1].tolist() == [-1.0, -1.0, -1.0, -2.0, -2.0, -2.0]
    with pytest.raises(ValueError):
        expand_tokens(torch.zeros(3, 4), 5)


def test_token_embeddings_prepends_class_and_adds_positions():
    tokens = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])  # B=2, P=1, D=2
    cls = torch.tensor([10.0, 20.0])
    pos = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])  # N=2 patches + class
    out = token_embeddings(tokens, cls, pos)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out[0], torch.tensor([[10.1, 20.2], [1.3, 2.4], [1.5, 2.6]]))
    assert torch.allclose(out[1], torch.tensor([[10.1, 20.2], [3.3, 4.4], [3.5, 4.6]]))


def test_patience_update_exact():
    best = torch.tensor([1.0, 1.0, float("inf")])
    wait = torch.tensor([3, 0, 0])
    loss = torch.tensor([0.5, 0.99995, 2.0])
    new_best, new_wait = patience_update(loss, best, wait, min_delta=1e-4)
    assert new_best.tolist() == [0.5, 1.0, 2.0]  # improved / too small an improvement / first value
    assert new_wait.tolist() == [0, 1, 0]


def test_one_dtype_policy():
    bf16 = {"avx512f", "avx512_bf16"}

    def ovi(device, width, flags):
        return resolve_dtype("auto", device, ovi_token_width=width, flags=flags)

    assert ovi("cpu", 1664, bf16) == torch.bfloat16
    assert ovi("cpu", 256, {"amx_bf16"}) == torch.bfloat16
    assert ovi("cpu", 32, bf16) == torch.float32  # too narrow to pay off
    assert ovi("cpu", 1664, {"avx2"}) == torch.float32  # no native bf16
    assert ovi("cuda", 32, set()) == torch.bfloat16
    assert ovi("mps", 1664, bf16) == torch.float32
    # the towers' own encodings stay float32 on every CPU; an explicit name always wins
    assert resolve_dtype("auto", "cpu", flags=bf16) == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cpu", ovi_token_width=1664, flags=bf16) == torch.float16
    assert resolve_dtype("FLOAT32", "cuda") == torch.float32


# ---- the vision-tower forward ---------------------------------------------------------------
def test_vision_tower_uses_sdpa(encoders):
    assert encoders.image_encoder.config._attn_implementation == "sdpa"


def test_class_token_only_last_layer_equals_full_forward(encoders):
    model = encoders.image_encoder
    tokens = init_pseudo_tokens(3, 2, encoders.token_width, [0, 1, 2], std=1.0)
    fast = encode_pseudo_tokens(model, tokens)
    full = encode_pseudo_tokens(model, tokens, cls_only_last=False)
    assert torch.allclose(fast, full, atol=1e-5, rtol=1e-5)


def test_full_forward_matches_the_models_own_encoder(encoders):
    """With real patches in place of pseudo-tokens the same parts give the model's image_embeds."""
    model = encoders.image_encoder
    vm = model.vision_model
    pixels = torch.randn(2, 3, encoders.image_size, encoders.image_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(pixel_values=pixels).image_embeds
        patches = vm.embeddings.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = vm.embeddings.class_embedding.expand(2, 1, -1)
        hidden = torch.cat([cls, patches], 1) + vm.embeddings.position_embedding.weight
        hidden = vm.pre_layrnorm(hidden)
        from ovi_cli.pseudo_tokens import _call_layer, _last_layer_class_token

        for layer in vm.encoder.layers[:-1]:
            hidden = _call_layer(layer, hidden)
        ours = model.visual_projection(vm.post_layernorm(_last_layer_class_token(vm.encoder.layers[-1], hidden)))
    assert torch.allclose(ours, ref, atol=1e-5)


# ---- engine behaviour -----------------------------------------------------------------------
def _run(encoders, prompts_idx, seeds, **kw):
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(4, encoders.embed_dim, generator=gen)
    settings = OviSettings(**{"tokens": 2, "steps": 40, "sync_every": 5, **kw})
    return optimize(
        encoders.encode_pseudo_tokens, targets[prompts_idx], token_width=encoders.token_width,
        seeds=seeds, settings=settings, device="cpu",
    )


def test_batch_equals_alone_with_early_stopping(encoders):
    kw = {"patience": 5, "min_delta": 2e-3}
    batch = _run(encoders, [0, 1, 2, 3], [10, 11, 12, 13], **kw)
    assert min(batch.steps_used) < 40, "the settings should make some prompt stop early"
    for i in range(4):
        alone = _run(encoders, [i], [10 + i], **kw)
        assert alone.steps_used[0] == batch.steps_used[i]
        assert torch.allclose(alone.image_embeds[0], batch.image_embeds[i], atol=1e-5, rtol=1e-4)
        assert abs(alone.text_cosine[0] - batch.text_cosine[i]) < 1e-5


def test_early_stopping_records_steps_used_and_history(encoders):
    res = _run(encoders, [0, 1, 2, 3], [10, 11, 12, 13], patience=5, min_delta=2e-3)
    for n, hist in zip(res.steps_used, res.history):
        assert n % 5 == 0 and 0 < n <= 40  # checked at sync points only
        assert len(hist["text_cosine"]) == n and len(hist["loss"]) == n
    off = _run(encoders, [0, 1], [10, 11], patience=0)
    assert off.steps_used == [40, 40]


def test_final_cosine_is_that_of_the_returned_embedding(encoders):
    res = _run(encoders, [0, 1], [10, 11], patience=0)
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(4, encoders.embed_dim, generator=gen)[:2]
    cos = torch.nn.functional.cosine_similarity(res.image_embeds, targets, dim=-1)
    assert torch.allclose(cos, torch.tensor(res.text_cosine), atol=1e-6)
    # history values are measured before each update: the last one is close to, not equal to, the final
    assert res.history[0]["text_cosine"][0] < res.text_cosine[0]


def test_sync_every_changes_nothing_but_progress_calls(encoders):
    calls = []
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(2, encoders.embed_dim, generator=gen)
    outs = []
    for k in (1, 7):
        calls.clear()
        outs.append(optimize(
            encoders.encode_pseudo_tokens, targets, token_width=encoders.token_width, seeds=[1, 2],
            settings=OviSettings(tokens=2, steps=20, sync_every=k), device="cpu",
            on_progress=lambda step, total, values: calls.append((step, len(values["cos"]))),
        ))
        assert [c[0] for c in calls] == list(range(k, 21, k)) + ([20] if 20 % k else [])
        assert all(n == 2 for _, n in calls)
    assert torch.equal(outs[0].image_embeds, outs[1].image_embeds)


class _RowsSpy:
    """A constraint that records which original rows it is asked about (weight 0: no effect)."""

    name = "spy"
    weight = 0.0

    def __init__(self):
        self.seen: list[list[int]] = []

    def term(self, embeds, step, rows):
        self.seen.append(list(rows.tolist()))
        assert embeds.shape[0] == len(rows)
        return embeds.norm(dim=-1)

    def report(self, embeds):
        return [{} for _ in range(embeds.shape[0])]


def test_constraints_get_original_rows_after_prompts_leave(encoders):
    spy = _RowsSpy()
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(4, encoders.embed_dim, generator=gen)
    res = optimize(
        encoders.encode_pseudo_tokens, targets, token_width=encoders.token_width, seeds=[10, 11, 12, 13],
        settings=OviSettings(tokens=2, steps=40, sync_every=5, patience=5, min_delta=2e-3),
        constraints=[spy], device="cpu",
    )
    assert spy.seen[0] == [0, 1, 2, 3]
    running = spy.seen[-2]  # the last step inside the loop (the final call covers everyone)
    assert running == sorted(i for i, n in enumerate(res.steps_used) if n == max(res.steps_used))
    assert spy.seen[-1] == [0, 1, 2, 3]
    assert len(res.history[0]["spy"]) == res.steps_used[0]
    assert len(res.constraint_finals["spy"]) == 4


def test_compile_failure_falls_back_with_one_warning(encoders, monkeypatch):
    def broken(fn):
        def call(tokens):
            raise RuntimeError("no C++ compiler\nlong traceback text")
        return call

    monkeypatch.setattr(engine, "_compile", broken)
    warnings: list[str] = []
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(2, encoders.embed_dim, generator=gen)
    kw = dict(token_width=encoders.token_width, seeds=[1, 2], device="cpu")
    res = optimize(encoders.encode_pseudo_tokens, targets, settings=OviSettings(tokens=2, steps=10, compile=True),
                   on_warning=warnings.append, **kw)
    ref = optimize(encoders.encode_pseudo_tokens, targets, settings=OviSettings(tokens=2, steps=10), **kw)
    assert len(warnings) == 1 and "--compile failed" in warnings[0] and "\n" not in warnings[0]
    assert res.compiled is False
    assert torch.equal(res.image_embeds, ref.image_embeds)


@pytest.mark.slow
def test_compile_really_compiles(encoders):
    gen = torch.Generator().manual_seed(42)
    targets = torch.randn(2, encoders.embed_dim, generator=gen)
    kw = dict(token_width=encoders.token_width, seeds=[1, 2], device="cpu")
    warnings: list[str] = []
    res = optimize(encoders.encode_pseudo_tokens, targets, settings=OviSettings(tokens=2, steps=10, compile=True),
                   on_warning=warnings.append, **kw)
    ref = optimize(encoders.encode_pseudo_tokens, targets, settings=OviSettings(tokens=2, steps=10), **kw)
    assert res.compiled and not warnings
    assert torch.allclose(res.image_embeds, ref.image_embeds, atol=1e-4, rtol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to observe host syncs")
def test_host_syncs_do_not_grow_with_steps(encoders):
    """CUDA's sync debug mode warns on every device-to-host sync: their count must not depend on steps."""
    import warnings

    from ovi_cli.pseudo_tokens import encode_pseudo_tokens as ept

    model = encoders.image_encoder.to("cuda")
    targets = torch.randn(3, encoders.embed_dim, device="cuda")

    def syncs(steps: int) -> int:
        settings = OviSettings(tokens=2, steps=steps, sync_every=1000, patience=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                optimize(lambda t: ept(model, t), targets, token_width=encoders.token_width, seeds=[1, 2, 3],
                         settings=settings, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message).lower() for w in caught)

    try:
        syncs(2)  # warm-up (lazy CUDA init)
        assert syncs(10) == syncs(40)
    finally:
        encoders.image_encoder.to("cpu")


def test_speed_benchmark_smallest_mode_ends_with_json():
    """`benchmarks/ovi_speed.py` in its smallest mode: the last line is JSON with the required keys."""
    import json
    import math
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ovi_speed.py"
    out = subprocess.run(
        [sys.executable, str(script), "--steps", "3", "--engine-steps", "3", "--batch", "2", "--peak-seconds", "0.2"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    last = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("speedup", "cos_engine", "cos_reference", "fraction_of_matmul_peak", "steps_engine",
                "steps_reference", "equal_cosine", "engine_settings", "reference_settings"):
        assert key in last, key
    for key in ("speedup", "cos_engine", "cos_reference", "fraction_of_matmul_peak"):
        assert math.isfinite(last[key]) and last[key] > 0, key
    assert (last["steps_engine"], last["steps_reference"], last["schedule"]) == (3, 3, "fast")
    assert "schedule fast" in out.stdout and "reference: 3 steps" in out.stdout  # both settings printed


# ---- the bf16 tower of OVI's loop -------------------------------------------------------------
def test_ovi_tower_bf16_copy_computes_what_autocast_computes(encoders):
    from ovi_cli.pseudo_tokens import ovi_forward, ovi_tower

    model = encoders.image_encoder
    assert ovi_tower(model, torch.float32) is model  # float32 stays the model itself
    tower = ovi_tower(model, torch.bfloat16)
    assert tower is not model and ovi_tower(model, torch.bfloat16) is tower  # made once, cached
    lin = [m for m in tower.modules() if isinstance(m, torch.nn.Linear)]
    assert lin and all(m.weight.dtype == torch.bfloat16 for m in lin)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the original is untouched
    shared = tower.vision_model.pre_layrnorm.weight
    assert shared is model.vision_model.pre_layrnorm.weight  # non-Linear parameters are shared

    x = init_pseudo_tokens(3, 2, encoders.token_width, [0, 1, 2], std=1.0).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = encode_pseudo_tokens(model, x)
        b = ovi_forward(model, torch.bfloat16)(y)
    a.float().sum().backward()
    b.float().sum().backward()
    assert torch.equal(a, b) and torch.equal(x.grad, y.grad)  # bit for bit
    # other users of the tower still run float32 on the CPU
    assert encoders.zero_image_embeds().dtype == torch.float32
