"""OVI speed: the engine with the recommended fast settings against the published-style loop.

    .venv/bin/python benchmarks/ovi_speed.py                      # tiny shape, CPU, ~1 minute
    .venv/bin/python benchmarks/ovi_speed.py --shape vit-b-32 --batch 8 --repeats 2
    .venv/bin/python benchmarks/ovi_speed.py --shape vit-bigG-14 --device cuda --batch 8

A random-weight CLIP vision tower (transformers `CLIPVisionModelWithProjection`) of a named shape
is built from a fixed seed; both loops get the same targets, the same initial pseudo-tokens
(per-prompt seeds), the same base lr and weight decay:

(a) reference: the paper's setting, run the way the "Cross the Gap" (Mistretta et al., ICLR 2025)
    OVI code runs it, re-written here: `--steps` (500) steps of AdamW at a constant lr 2e-2,
    betas (0.9, 0.999), `nn.CosineEmbeddingLoss` on L2-normalised features (mean over the batch),
    `torch.cuda.amp.autocast` (float16 + GradScaler on CUDA; that autocast does nothing on a CPU,
    so float32 there), the full vision encoder on every position, the loss copied to the host
    (`.item()`) every step.
(b) engine: `ovi_cli.engine.optimize` with the recommended settings: `--schedule fast` (its own
    step count, 160; see ovi_cli/schedule.py), `--dtype auto` (bf16 where the hardware computes
    it natively, through a copy of the tower with bf16 Linear weights), host syncs every 10
    steps, class-token-only last layer; `--compile` / `--compile-mode` optional.

`speedup` = reference wall time / engine wall time; it counts only when the engine's final text
cosine is within 0.005 of the reference's (`equal_cosine`). Both final cosines are measured the
same way: one float32 full forward of each loop's last iterate. `per_step_speedup` separates the
per-step gain from the step count. FLOP counts come from `torch.utils.flop_counter` (matmuls and
attention); the machine's dense-matmul FLOP/s is measured in the same run (square matmuls in
float32 and bfloat16), so `fraction_of_matmul_peak` is the engine's achieved FLOP/s over it.
The LAST line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovi_cli.devices import resolve_dtype  # noqa: E402
from ovi_cli.engine import DEFAULT_MIN_DELTA, DEFAULT_PATIENCE, OviSettings, optimize  # noqa: E402
from ovi_cli.pseudo_tokens import encode_pseudo_tokens, init_pseudo_tokens, ovi_forward  # noqa: E402
from ovi_cli.schedule import SCHEDULES  # noqa: E402

# hidden, layers, heads, mlp, image, patch, projection, activation
SHAPES = {
    "tiny": (256, 4, 4, 1024, 224, 32, 256, "quick_gelu"),
    "vit-b-32": (768, 12, 12, 3072, 224, 32, 512, "quick_gelu"),
    "vit-l-14": (1024, 24, 16, 4096, 224, 14, 768, "quick_gelu"),
    "vit-bigG-14": (1664, 48, 16, 8192, 224, 14, 1280, "gelu"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_tower(shape: str, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, layers, heads, mlp, image, patch, proj, act = SHAPES[shape]
    cfg = CLIPVisionConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=mlp,
        image_size=image, patch_size=patch, projection_dim=proj, hidden_act=act,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = CLIPVisionModelWithProjection(cfg)
    return model.to(dtype).eval().requires_grad_(False)


def make_targets(model, batch: int, kind: str, seed: int) -> torch.Tensor:
    """`[B, D]` text-like targets, float32.

    `mix` (default): a shared offset (the "modality gap") + per-prompt noise + the tower's embedding
    of a random image, all unit length, summed: reachable in part, like a caption's embedding.
    `gauss`: isotropic Gaussian vectors (mostly unreachable: similarity plateaus low).
    """
    gen = torch.Generator().manual_seed(seed + 1)
    proj = model.config.projection_dim
    noise = torch.randn(batch, proj, generator=gen)
    if kind == "gauss":
        return noise
    size = model.config.image_size
    pixels = torch.randn(batch, 3, size, size, generator=gen)
    gap = torch.randn(1, proj, generator=gen)
    dev = next(model.parameters()).device
    with torch.no_grad():
        img = model(pixel_values=pixels.to(dev, next(model.parameters()).dtype)).image_embeds.float().cpu()
    return F.normalize(img, dim=-1) + 0.6 * F.normalize(gap, dim=-1) + 0.6 * F.normalize(noise, dim=-1)


def full_forward(model, tokens: torch.Tensor) -> torch.Tensor:
    """The reference's forward: every encoder layer on every position (no shortcut)."""
    return encode_pseudo_tokens(model, tokens, cls_only_last=False)


def reference_loop(model, targets, init, *, steps, lr, weight_decay, device, amp_dtype):
    """OVI as the published reference runs it (re-written, not copied)."""
    criterion = torch.nn.CosineEmbeddingLoss()
    y = torch.as_tensor([1], device=device)
    tokens = torch.nn.Parameter(init.clone().to(device))
    optimizer = torch.optim.AdamW([tokens], lr=lr, weight_decay=weight_decay)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    text = targets.to(device)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
            feats = full_forward(model, tokens)
            feats = F.normalize(feats, dim=-1)
            loss = criterion(feats, F.normalize(text, dim=-1), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach().cpu().item())
    return tokens.detach(), losses


def final_cosine(model32, tokens, targets) -> list[float]:
    """Every loop's last iterate scored the same way: one float32 full forward."""
    dev = next(model32.parameters()).device
    with torch.no_grad():
        emb = full_forward(model32, tokens.to(dev, torch.float32)).float().cpu()
    return F.cosine_similarity(emb, targets, dim=-1).tolist()


def step_flops(model, fwd, batch, tokens, width, device, dtype) -> float:
    """FLOPs (matmuls + attention) of one forward+backward step at this batch size."""
    from torch.utils.flop_counter import FlopCounterMode

    p = (torch.randn(batch, tokens, width, device=device) * 0.02).requires_grad_(True)
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = fwd(model, p)
        out.float().sum().backward()
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """Best dense square-matmul FLOP/s seen in a short burst (same process, same threads)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    torch.mm(a, b)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _sync(device)
        t = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        _sync(device)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_settings(args, *, schedule: str, steps: int | None, patience: int, min_delta: float,
                    compile_: bool) -> OviSettings:
    return OviSettings(tokens=args.tokens, steps=steps, schedule=schedule, lr=args.lr,
                       weight_decay=args.weight_decay, patience=patience, min_delta=min_delta, compile=compile_)


def run_engine(forward, width, targets, seeds, settings, device, dtype):
    """One engine run: (result, wall seconds, warnings)."""
    warnings: list[str] = []
    _sync(device)
    t = time.perf_counter()
    res = optimize(forward, targets, token_width=width, seeds=seeds, settings=settings, device=device, dtype=dtype,
                   on_warning=warnings.append)
    _sync(device)
    return res, time.perf_counter() - t, warnings


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500, help="the reference loop's steps (the paper: 500)")
    ap.add_argument("--schedule", default="fast", choices=sorted(SCHEDULES),
                    help="the engine's schedule (default: fast, the recommended preset)")
    ap.add_argument("--engine-steps", type=int, default=None,
                    help="the engine's steps (default: the schedule's: fast 160; paper: --steps)")
    ap.add_argument("--tokens", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-2)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", choices=("mix", "gauss"), default="mix")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="engine compute dtype: auto | float32 | bfloat16 | float16")
    ap.add_argument("--reference-dtype", default="published",
                    help="reference autocast: published (float16 on CUDA, none on CPU) | float32 | bfloat16 | float16")
    ap.add_argument("--patience", type=int, default=DEFAULT_PATIENCE)
    ap.add_argument("--min-delta", type=float, default=DEFAULT_MIN_DELTA)
    ap.add_argument("--compile", action="store_true", help="engine with torch.compile (compile time included)")
    ap.add_argument("--compile-mode", default=None,
                    choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                    help="compile the engine's forward here with this torch.compile mode (reduce-overhead: CUDA "
                    "graphs); compile time included")
    ap.add_argument("--compile-compare", default=None,
                    choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                    help="also run the engine eager and compiled with this torch.compile mode, alternately, "
                    "--repeats + 1 rounds in this process (round 0 includes compilation)")
    ap.add_argument("--ablate", action="store_true",
                    help="also run: the engine with the paper schedule (per-step speed alone), the engine in float32, "
                    "the engine under bf16 autocast of float32 weights (the old way), the reference in bf16 (CPU)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate reference/engine runs this many times")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for both loops and the matmul peak (0: torch's default); one thread "
                    "keeps timings stable on a shared machine")
    ap.add_argument("--peak-seconds", type=float, default=1.5, help="how long to measure the matmul peak")
    ap.add_argument("--skip-reference", action="store_true", help="engine only (e.g. batch scans on a GPU)")
    args = ap.parse_args(argv)

    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    width = SHAPES[args.shape][0]
    dtype = resolve_dtype(args.dtype, device, ovi_token_width=width)
    if args.reference_dtype == "published":
        ref_amp = torch.float16 if device.type == "cuda" else None
    else:
        ref_amp = None if args.reference_dtype == "float32" else DTYPES[args.reference_dtype]
    eng_steps = args.engine_steps or (args.steps if args.schedule == "paper" else SCHEDULES[args.schedule].steps)
    eng_settings = engine_settings(args, schedule=args.schedule, steps=eng_steps, patience=args.patience,
                                   min_delta=args.min_delta, compile_=args.compile)

    t0 = time.perf_counter()
    model32 = build_tower(args.shape, device)
    # the engine's tower as the project loads it: float32 weights on a CPU, compute-dtype weights elsewhere;
    # OVI's loop runs `ovi_forward`: on a CPU in bf16, a copy with bf16 Linear weights (cast once)
    model = model32 if device.type == "cpu" or dtype == torch.float32 else build_tower(args.shape, device, dtype)
    forward = ovi_forward(model, dtype)
    if args.compile_mode:
        forward = torch.compile(forward, mode=args.compile_mode)
    targets = make_targets(model32, args.batch, args.targets, args.seed)
    seeds = [args.seed + i for i in range(args.batch)]
    init = init_pseudo_tokens(args.batch, args.tokens, width, seeds)
    sched = SCHEDULES[args.schedule]
    ref_desc = (f"reference: {args.steps} steps, AdamW lr {args.lr:g} constant, betas (0.9, 0.999), weight decay "
                f"{args.weight_decay:g}, {str(ref_amp)[6:] if ref_amp else 'float32'}, full encoder, .item() per step")
    eng_desc = (f"engine: schedule {args.schedule} ({eng_steps} steps, peak {sched.peak_factor:g} x lr {args.lr:g}, "
                f"warm-up {sched.warmup:g}, {sched.decay} decay after hold {sched.hold:g} to {sched.final_fraction:g}, "
                f"betas {sched.betas}), weight decay {args.weight_decay:g}, {str(dtype)[6:]}, class-token-only last "
                f"layer, patience {args.patience}" + (f", compile {args.compile_mode}" if args.compile_mode else "")
                + (", --compile" if args.compile else ""))
    print(f"# {args.shape}: batch {args.batch}, {args.tokens} tokens, targets {args.targets}, "
          f"device {describe_machine(device)}; built in {time.perf_counter() - t0:.1f}s", flush=True)
    print(f"# {ref_desc}\n# {eng_desc}", flush=True)

    n_peak = 8192 if device.type == "cuda" else 2048  # a GPU needs large products to reach its peak
    peak32 = matmul_peak(device, torch.float32, n=n_peak, seconds=args.peak_seconds)
    peak_lo = (matmul_peak(device, dtype, n=n_peak, seconds=args.peak_seconds) if dtype != torch.float32
               else peak32)
    print(f"# dense matmul peak: float32 {peak32 / 1e9:.1f} GFLOP/s"
          + (f", {str(dtype)[6:]} {peak_lo / 1e9:.1f} GFLOP/s" if dtype != torch.float32 else ""), flush=True)

    eng_flops_b = step_flops(model, encode_pseudo_tokens, args.batch, args.tokens, width, device, dtype) / args.batch
    ref_flops_b = step_flops(model32, full_forward, args.batch, args.tokens, width, device,
                             ref_amp or torch.float32) / args.batch

    # warm-up both paths (allocator, oneDNN/cuBLAS primitive caches)
    if not args.skip_reference:
        reference_loop(model32, targets, init, steps=2, lr=args.lr, weight_decay=args.weight_decay, device=device,
                       amp_dtype=ref_amp)
    run_engine(ovi_forward(model, dtype), width, targets, seeds,
               engine_settings(args, schedule="paper", steps=2, patience=0, min_delta=args.min_delta,
                               compile_=False), device, dtype)

    out: dict = {"shape": args.shape, "device": describe_machine(device), "batch": args.batch,
                 "tokens": args.tokens, "targets": args.targets, "engine_dtype": str(dtype)[6:],
                 "reference_dtype": str(ref_amp)[6:] if ref_amp else "float32",
                 "engine_settings": eng_desc, "reference_settings": ref_desc,
                 "schedule": args.schedule, "patience": args.patience, "min_delta": args.min_delta,
                 "compile": args.compile, "compile_mode": args.compile_mode,
                 "matmul_peak_gflops_fp32": peak32 / 1e9}
    if dtype != torch.float32:
        out[f"matmul_peak_gflops_{str(dtype)[6:]}"] = peak_lo / 1e9

    def engine_record(label, res, secs, cpu_s, flops_b, peak):
        prompt_steps = sum(res.steps_used)
        loop_steps = max(res.steps_used)
        rec = {
            "seconds": secs, "cpu_seconds": cpu_s, "steps_per_s": loop_steps / secs, "prompts_per_s": args.batch / secs,
            "steps": loop_steps, "steps_used_mean": prompt_steps / len(res.steps_used), "steps_used": res.steps_used,
            "cos": final_cosine(model32, res.tokens, targets), "compiled": res.compiled,
            "gflop_per_prompt_step": flops_b / 1e9,
            "fraction_of_matmul_peak": flops_b * prompt_steps / secs / peak,
        }
        rec["cos_mean"] = sum(rec["cos"]) / len(rec["cos"])
        print(f"{label}: {secs:.2f}s (cpu {cpu_s:.1f}s)  {loop_steps / secs:.2f} steps/s  "
              f"{args.batch / secs:.3f} prompts/s  steps used {rec['steps_used_mean']:.0f}/{loop_steps}  "
              f"cos {rec['cos_mean']:.5f}  {100 * rec['fraction_of_matmul_peak']:.0f}% of matmul peak", flush=True)
        return rec

    # Reference and engine alternate, `--repeats` times; the fastest run of each counts (a shared
    # machine only ever makes a run slower), every time is kept in the JSON.
    ref_runs, eng_runs = [], []
    for _ in range(max(1, args.repeats)):
        if not args.skip_reference:
            _sync(device)
            t, c = time.perf_counter(), time.process_time()
            ref_tokens, _ = reference_loop(model32, targets, init, steps=args.steps, lr=args.lr,
                                           weight_decay=args.weight_decay, device=device, amp_dtype=ref_amp)
            _sync(device)
            ref_s, ref_c = time.perf_counter() - t, time.process_time() - c
            ref_cos = final_cosine(model32, ref_tokens, targets)
            ref_runs.append({
                "seconds": ref_s, "cpu_seconds": ref_c, "steps": args.steps, "steps_per_s": args.steps / ref_s,
                "prompts_per_s": args.batch / ref_s, "cos_mean": sum(ref_cos) / len(ref_cos), "cos": ref_cos,
                "gflop_per_prompt_step": ref_flops_b / 1e9,
                "fraction_of_matmul_peak": ref_flops_b * args.batch * args.steps / ref_s / (peak_lo if ref_amp
                                                                                           else peak32),
            })
            print(f"reference: {ref_s:.2f}s (cpu {ref_c:.1f}s)  {args.steps / ref_s:.2f} steps/s  "
                  f"{args.batch / ref_s:.3f} prompts/s  {args.steps} steps  cos {ref_runs[-1]['cos_mean']:.5f}  "
                  f"{100 * ref_runs[-1]['fraction_of_matmul_peak']:.0f}% of matmul peak", flush=True)
        c = time.process_time()
        res, secs, warns = run_engine(forward, width, targets, seeds, eng_settings, device, dtype)
        for w in warns:
            print(f"# engine warning: {w}", flush=True)
        eng = engine_record("engine", res, secs, time.process_time() - c, eng_flops_b, peak_lo)
        eng["cos_own_forward"] = sum(res.text_cosine) / len(res.text_cosine)  # its final forward, in its dtype
        eng_runs.append(eng)
    if ref_runs:
        out["reference"] = {**min(ref_runs, key=lambda r: r["seconds"]),
                            "all_seconds": [r["seconds"] for r in ref_runs]}
    eng = {**min(eng_runs, key=lambda r: r["seconds"]), "all_seconds": [r["seconds"] for r in eng_runs]}
    out["engine"] = eng

    if args.compile_compare:
        out["compile_compare"] = compile_compare(args, model, width, targets, seeds, eng_settings, device, dtype)
    if args.ablate:
        out["ablation"] = ablation(args, model, model32, targets, seeds, init, width, dtype, device, ref_amp,
                                   eng_flops_b, peak32, peak_lo, engine_record)

    ref = out.get("reference")
    summary = {
        "speedup": (ref["seconds"] / eng["seconds"]) if ref else None,
        "cos_engine": eng["cos_mean"],
        "cos_reference": ref["cos_mean"] if ref else None,
        "fraction_of_matmul_peak": eng["fraction_of_matmul_peak"],
        "reference_fraction_of_matmul_peak": ref["fraction_of_matmul_peak"] if ref else None,
        "steps_engine": eng["steps"],
        "steps_engine_used_mean": eng["steps_used_mean"],
        "steps_reference": args.steps if ref else None,
        "engine_prompts_per_s": eng["prompts_per_s"],
        "reference_prompts_per_s": ref["prompts_per_s"] if ref else None,
        "engine_steps_per_s": eng["steps_per_s"],
        "reference_steps_per_s": ref["steps_per_s"] if ref else None,
    }
    if ref:
        summary["per_step_speedup"] = eng["steps_per_s"] / ref["steps_per_s"]
        summary["cos_difference"] = summary["cos_engine"] - summary["cos_reference"]
        summary["equal_cosine"] = bool(summary["cos_difference"] >= -0.005)  # within 0.005, or better
    summary["seconds_total"] = time.perf_counter() - t0
    result = {**summary, **out}
    print(json.dumps(result))
    return result


def compile_compare(args, model, width, targets, seeds, settings, device, dtype) -> dict:
    """Eager vs `torch.compile(mode=...)` of the engine's forward, alternating in one process."""
    mode = args.compile_compare
    variants = {"eager": ovi_forward(model, dtype), mode: torch.compile(ovi_forward(model, dtype), mode=mode)}
    rec = {k: {"first_seconds": None, "seconds": []} for k in variants}
    for rnd in range(max(1, args.repeats) + 1):
        for name, fwd in variants.items():
            try:
                res, secs, _ = run_engine(fwd, width, targets, seeds, settings, device, dtype)
            except Exception as exc:  # a compiler failure: recorded, not fatal
                rec[name]["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                print(f"compile_compare {name}: failed: {rec[name]['error']}", flush=True)
                continue
            if rnd == 0:
                rec[name]["first_seconds"] = secs
            else:
                rec[name]["seconds"].append(secs)
            rec[name]["cos_mean"] = sum(res.text_cosine) / len(res.text_cosine)
    for r in rec.values():
        if r["seconds"]:
            r["best_seconds"] = min(r["seconds"])
            r["steps_per_s"] = settings.steps / r["best_seconds"]
    if rec["eager"].get("best_seconds") and rec[mode].get("best_seconds"):
        rec["speedup_after_compilation"] = rec["eager"]["best_seconds"] / rec[mode]["best_seconds"]
        rec["compile_seconds"] = rec[mode]["first_seconds"] - rec[mode]["best_seconds"]
        print(f"compile_compare: eager {rec['eager']['best_seconds']:.2f}s, {mode} {rec[mode]['best_seconds']:.2f}s "
              f"({rec['speedup_after_compilation']:.2f}x after compilation; first run "
              f"{rec[mode]['first_seconds']:.1f}s)", flush=True)
    return rec


def ablation(args, model, model32, targets, seeds, init, width, dtype, device, ref_amp, eng_flops_b, peak32,
             peak_lo, engine_record) -> dict:
    """One lever at a time, each run once after the main runs (same machine, same process)."""
    abl = {}
    paper = engine_settings(args, schedule="paper", steps=args.steps, patience=args.patience,
                            min_delta=args.min_delta, compile_=False)
    fast = engine_settings(args, schedule=args.schedule, steps=args.engine_steps, patience=args.patience,
                           min_delta=args.min_delta, compile_=False)
    variants = [("engine_paper_schedule", ovi_forward(model, dtype), paper, dtype)]
    if dtype != torch.float32:
        variants.append(("engine_float32", ovi_forward(model32, torch.float32), fast, torch.float32))
    if dtype != torch.float32 and model is model32:  # the old way: autocast re-casts float32 weights every step
        variants.append(("engine_autocast_float32_weights", lambda p: encode_pseudo_tokens(model32, p), fast, dtype))
    for label, fwd, settings, dt in variants:
        c = time.process_time()
        r, s, _ = run_engine(fwd, width, targets, seeds, settings, device, dt)
        c = time.process_time() - c
        fl = eng_flops_b if dt == dtype else step_flops(model32, encode_pseudo_tokens, args.batch, args.tokens, width,
                                                        device, dt) / args.batch
        abl[label] = engine_record(label, r, s, c, fl, peak_lo if dt == torch.bfloat16 else peak32)
    if not args.skip_reference and ref_amp is None and device.type == "cpu":
        _sync(device)
        t = time.perf_counter()
        tok, _ = reference_loop(model32, targets, init, steps=args.steps, lr=args.lr,
                                weight_decay=args.weight_decay, device=device, amp_dtype=torch.bfloat16)
        s = time.perf_counter() - t
        c = final_cosine(model32, tok, targets)
        abl["reference_bfloat16"] = {"seconds": s, "prompts_per_s": args.batch / s, "cos_mean": sum(c) / len(c)}
        print(f"reference_bfloat16: {s:.2f}s  cos {sum(c) / len(c):.5f}", flush=True)
    return abl


if __name__ == "__main__":
    main()
