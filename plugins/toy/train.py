"""Training the toy world on CPU, deterministically: tiny CLIP, then decoder and prior, then stats.

    from ovi_plugins.toy.train import TrainConfig, train_all
    report = train_all(Path("models"), TrainConfig())

Writes, under OUT:
  prior/      kandinsky-2-2-prior layout: text_encoder/, image_encoder/, tokenizer/, image_processor/
  decoder/    the toy decoder (config.json + model.safetensors, format "ovi-toy-decoder")
  toy_prior/  the trained toy prior (format "ovi-toy-prior")
  stats/      a statistics store of the training images' embeddings (ovi_stats.store format)
  train.json  the config, losses, timings and quick quality checks
Same seed, same torch build, one thread: same weights.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ovi_cli.outputs import atomic_write_json, finite_or_none
from ovi_plugins.toy.dataset import COLOURS, IMAGE_SIZE, SHAPES, Scene, canonical_scene, make_arrays, render
from ovi_plugins.toy.nets import DECODER_FORMAT, PRIOR_FORMAT, ToyDecoderNet, ToyPriorNet, save_net
from ovi_plugins.toy.tokenizer import MAX_LENGTH, write_tokenizer

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    seed: int = 0
    n_train: int = 10000
    n_heldout: int = 1000
    embed_dim: int = 64  # CLIP projection_dim
    width: int = 64  # hidden size of both towers (= OVI's pseudo-token width)
    vision_layers: int = 3
    text_layers: int = 2
    patch: int = 8
    clip_steps: int = 1500
    clip_batch: int = 128
    clip_lr: float = 2e-3
    clip_temperature: float = 0.07  # initial temperature of the learned logit scale (CLIP's 0.07; clamped at 0.01)
    decoder_steps: int = 1200
    decoder_batch: int = 64
    decoder_lr: float = 2e-3
    decoder_base: int = 64
    # True: the decoder redraws each image's own background (tint and gradient), as unCLIP's decoder
    # redraws what an image embedding carries beyond its caption; False: plain grey (docs/toy.md)
    decoder_background: bool = False
    # std of the Gaussian noise added to the unit embeddings the decoder trains on (0: image embeddings
    # only, as Kandinsky's decoder is trained)
    decoder_noise: float = 0.03
    prior_steps: int = 1500
    prior_batch: int = 256
    prior_lr: float = 2e-3
    prior_contrastive: float = 0.2
    stats_images: int = 10000
    threads: int = 1

    def with_settings(self, pairs: list[str]) -> TrainConfig:
        """A copy with `KEY=VALUE` settings applied, each value parsed as its field's type; ValueError
        names an unknown key or a value of the wrong type."""
        from dataclasses import fields, replace

        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ValueError(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
            kind = types[key] if isinstance(types[key], str) else types[key].__name__
            try:
                if kind == "bool":
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    changes[key] = text.lower() in ("true", "1")
                else:
                    changes[key] = {"int": int, "float": float}[kind](text)
            except ValueError:
                raise ValueError(f"{pair!r}: {key} takes {kind} values") from None
            if kind in ("int", "float"):
                low = 0 if key in ("seed", "n_heldout", "decoder_noise", "prior_contrastive") else None
                if not math.isfinite(changes[key]) or (changes[key] < 0 if low == 0 else changes[key] <= 0):
                    raise ValueError(f"{pair!r}: {key} must be a finite number {'>= 0' if low == 0 else '> 0'}")
        return replace(self, **changes)

    @classmethod
    def tiny(cls) -> TrainConfig:
        """Seconds-long settings for tests (the models it makes are barely trained)."""
        return cls(n_train=256, n_heldout=64, clip_steps=6, clip_batch=32, decoder_steps=4, decoder_batch=16,
                   prior_steps=4, prior_batch=32, stats_images=256, vision_layers=1, text_layers=1, width=32,
                   embed_dim=16, decoder_base=16)


CLIP_FIELDS = ("seed", "n_train", "n_heldout", "embed_dim", "width", "vision_layers", "text_layers", "patch",
               "clip_steps", "clip_batch", "clip_lr", "clip_temperature", "threads")


def same_clip_config(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether CLIP towers trained under `old` are the ones `new` would train (the fields the data and
    the CLIP stage read); the decoder, prior and stats settings may differ."""
    defaults = asdict(TrainConfig())  # a field an older train.json lacks had its default value
    return all(old.get(k, defaults[k]) == new.get(k, defaults[k]) for k in CLIP_FIELDS)


def pixels_from_uint8(arr: np.ndarray) -> Tensor:
    """uint8 `[N, H, W, 3]` -> CLIP-normalised float `[N, 3, H, W]` (what the image processor gives)."""
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def processor_config(size: int = IMAGE_SIZE) -> dict[str, Any]:
    return {
        "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "image_processor_type": "CLIPImageProcessor", "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": size},
    }


def _lr(step: int, total: int, base: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return base * (step + 1) / warm
    return base * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def contrastive_loss(a: Tensor, b: Tensor, scale: Tensor, groups: Tensor) -> Tensor:
    """Symmetric InfoNCE on unit vectors; rows with the same `groups` id (same caption) are all positives."""
    logits = scale * a @ b.T
    same = (groups[:, None] == groups[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean())


def _build_clip(cfg: TrainConfig, vocab_size: int):
    from transformers import (
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    text_cfg = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.width, intermediate_size=cfg.width * 2,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        projection_dim=cfg.embed_dim, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    vis_cfg = CLIPVisionConfig(
        hidden_size=cfg.width, intermediate_size=cfg.width * 2, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=cfg.patch, projection_dim=cfg.embed_dim,
    )
    return CLIPTextModelWithProjection(text_cfg), CLIPVisionModelWithProjection(vis_cfg)


@torch.no_grad()
def encode_in_batches(fn: Callable[[Tensor], Tensor], x: Tensor, batch: int = 256) -> Tensor:
    return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else x


def fit(
    name: str,
    opt: torch.optim.Optimizer,
    steps: int,
    base_lr: float,
    batch_loss: Callable[[int], Tensor],
    log: Log,
    log_every: int = 100,
    clip_params: list[Tensor] | None = None,
) -> list[float]:
    """The training loop every toy stage shares; returns the loss of each step.

    Per step: the warm-up + cosine learning rate, `batch_loss(step)` (which draws its own batch
    from its own seeded generator), backward, gradient clipping to norm 1 when `clip_params` is
    given, the optimiser step. Logs the mean of the last 100 losses every `log_every` steps and at
    the end. The order of operations is fixed: the same seed gives the same weights.
    """
    losses: list[float] = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, base_lr)
        loss = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_params is not None:
            torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps - 1:
            log(f"{name} step {step}/{steps} loss {np.mean(losses[-100:]):.4f}")
    return losses


def finish_stage(name: str, models: tuple[torch.nn.Module, ...], losses: list[float], started: float,
                 report: dict[str, Any]) -> None:
    """Freeze the stage's models and record its final loss (mean of the last 50) and its time."""
    for m in models:
        m.eval().requires_grad_(False)
    report["losses"][f"{name}_final"] = float(np.mean(losses[-50:])) if losses else None
    report["timings_s"][name] = time.perf_counter() - started


def _train_clip(out: Path, cfg: TrainConfig, tok, pixels: Tensor, group: Tensor, ids: Tensor, mask: Tensor,
                report: dict[str, Any], log: Log):
    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    text_model, vision_model = _build_clip(cfg, len(tok))
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg.clip_temperature)))
    params = list(text_model.parameters()) + list(vision_model.parameters()) + [logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.clip_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed)
    text_model.train()
    vision_model.train()

    def batch_loss(step: int) -> Tensor:
        idx = torch.randint(0, len(pixels), (cfg.clip_batch,), generator=gen)
        gid = group[idx]
        img = F.normalize(vision_model(pixel_values=pixels[idx]).image_embeds, dim=-1)
        txt = F.normalize(text_model(input_ids=ids[gid], attention_mask=mask[gid]).text_embeds, dim=-1)
        return contrastive_loss(img, txt, logit_scale.exp().clamp(max=100.0), gid)

    losses = fit("clip", opt, cfg.clip_steps, cfg.clip_lr, batch_loss, log, clip_params=params)
    finish_stage("clip", (text_model, vision_model), losses, t, report)
    report["checks"]["clip_logit_scale"] = float(logit_scale.detach().exp().clamp(max=100.0))
    text_model.save_pretrained(out / "prior" / "text_encoder")
    vision_model.save_pretrained(out / "prior" / "image_encoder")
    atomic_write_json(out / "prior" / "image_processor" / "preprocessor_config.json", processor_config())

    return text_model, vision_model


def train_all(out: Path, cfg: TrainConfig | None = None, log: Log = print, reuse_clip: bool = False) -> dict[str, Any]:
    """Train everything and write it under `out` (see the module docstring). Returns the report.

    `reuse_clip`: load the CLIP towers already in `out/prior` (from an earlier run with the same
    config) instead of training them again; every stage seeds its own generators, so the decoder,
    prior and stats come out exactly as in a full run.

    The models are written to a private folder beside `out` and moved into place when all are
    done: an interrupted or failed run leaves `out` as it was (absent, empty, or the earlier run).
    """
    import shutil

    from ovi_cli.outputs import install_dir, private_dir

    out = Path(out)
    tmp = private_dir(out)
    try:
        if reuse_clip:
            shutil.copytree(out / "prior", tmp / "prior")
            shutil.copy2(out / "train.json", tmp / "train.json")
        report = _train_in(tmp, cfg or TrainConfig(), log, reuse_clip)
        install_dir(tmp, out)  # replaces an empty --out, or the earlier run with --reuse-clip
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"done in {report['timings_s']['total']:.0f}s -> {out}")
    return report


def _train_in(out: Path, cfg: TrainConfig, log: Log, reuse_clip: bool) -> dict[str, Any]:
    """The stages, written into the (private) folder `out`."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    report: dict[str, Any] = {"config": asdict(cfg), "timings_s": {}, "losses": {}, "checks": {}}
    if reuse_clip:
        old = json.loads((out / "train.json").read_text())
        if not same_clip_config(old.get("config") or {}, asdict(cfg)):
            raise ValueError("--reuse-clip needs the same data and CLIP settings as the run that made the CLIP")
        report["timings_s"]["clip"] = old["timings_s"]["clip"]
        report["losses"]["clip_final"] = old["losses"]["clip_final"]
        if "clip_logit_scale" in old.get("checks", {}):
            report["checks"]["clip_logit_scale"] = old["checks"]["clip_logit_scale"]
    t_all = time.perf_counter()

    # ---- data ----------------------------------------------------------------------------
    t = time.perf_counter()
    images, scenes = make_arrays(cfg.n_train, "train", cfg.seed)
    held_images, held_scenes = make_arrays(cfg.n_heldout, "heldout", cfg.seed)
    pixels = pixels_from_uint8(images)
    captions = [s.caption for s in scenes]
    uniq = sorted(set(captions))
    group = torch.tensor([uniq.index(c) for c in captions])
    if not reuse_clip:
        write_tokenizer(out / "prior" / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(out / "prior" / "tokenizer")
    enc = tok(uniq, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    report["data"] = {"train_images": len(scenes), "heldout_images": len(held_scenes), "unique_captions": len(uniq)}
    report["timings_s"]["data"] = time.perf_counter() - t
    log(f"data: {len(scenes)} train images, {len(uniq)} distinct captions ({report['timings_s']['data']:.1f}s)")

    # ---- (a) tiny CLIP, contrastive ------------------------------------------------------------
    if reuse_clip:
        text_model = CLIPTextModelWithProjection.from_pretrained(out / "prior" / "text_encoder").eval()
        vision_model = CLIPVisionModelWithProjection.from_pretrained(out / "prior" / "image_encoder").eval()
        text_model.requires_grad_(False)
        vision_model.requires_grad_(False)
    else:
        text_model, vision_model = _train_clip(out, cfg, tok, pixels, group, ids, mask, report, log)

    img_emb = encode_in_batches(lambda x: vision_model(pixel_values=x).image_embeds, pixels)
    text_out = text_model(input_ids=ids, attention_mask=mask)
    report["checks"]["clip_zero_shot_heldout_single"] = _zero_shot(
        tok, text_model, vision_model, held_images, held_scenes)

    _train_decoder(out, cfg, scenes, img_emb, report, log)
    _train_prior(out, cfg, img_emb, text_out, group, mask, report, log)

    # ---- stats store of the training images ------------------------------------------------
    t = time.perf_counter()
    report["stats"] = write_toy_stats(out, img_emb[: cfg.stats_images].numpy(), cfg.stats_images)
    report["timings_s"]["stats"] = time.perf_counter() - t
    report["timings_s"]["total"] = time.perf_counter() - t_all + (report["timings_s"]["clip"] if reuse_clip else 0.0)
    report["reused_clip"] = reuse_clip
    atomic_write_json(out / "train.json", finite_or_none(report))
    return report


def _train_decoder(out: Path, cfg: TrainConfig, scenes: list, img_emb: Tensor, report: dict[str, Any],
                   log: Log) -> None:
    """(b) The decoder: CLIP image embedding -> the scene's canonical rendering; saved to `out/decoder`."""
    t = time.perf_counter()
    torch.manual_seed(cfg.seed + 1)
    dec = ToyDecoderNet(cfg.embed_dim, cfg.decoder_base, IMAGE_SIZE)
    canonical = np.stack([np.asarray(render(decoder_target(sc, cfg.decoder_background))) for sc in scenes])
    target = torch.from_numpy(canonical).permute(0, 3, 1, 2).float() / 255.0
    opt = torch.optim.AdamW(dec.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)

    def decoder_loss(step: int) -> Tensor:
        idx = torch.randint(0, len(target), (cfg.decoder_batch,), generator=gen)
        e = F.normalize(img_emb[idx], dim=-1)
        if cfg.decoder_noise:  # robustness to embeddings off the data (hides the modality gap: docs/toy.md)
            e = e + cfg.decoder_noise * torch.randn(e.shape, generator=gen)
        pred = dec(e)
        return F.mse_loss(pred, target[idx]) + 0.5 * F.l1_loss(pred, target[idx])

    losses = fit("decoder", opt, cfg.decoder_steps, cfg.decoder_lr, decoder_loss, log)
    finish_stage("decoder", (dec,), losses, t, report)
    save_net(dec, out / "decoder", DECODER_FORMAT)


def decoder_target(scene: Scene, background: bool = True) -> Scene:
    """What the decoder learns to draw for a training image: its objects in the canonical layout, on
    the image's own background (tint and gradient, no pixel noise) or, with `background=False`, on grey."""
    if not background:
        return canonical_scene(scene.objects)
    return canonical_scene(scene.objects, background=scene.background, gradient=scene.gradient)


def _train_prior(out: Path, cfg: TrainConfig, img_emb: Tensor, text_out: Any, group: Tensor, mask: Tensor,
                 report: dict[str, Any], log: Log) -> None:
    """(c) The toy prior, ECLIPSE-style: projection + contrastive; saved to `out/toy_prior`."""
    t = time.perf_counter()
    torch.manual_seed(cfg.seed + 2)
    prior = ToyPriorNet(cfg.embed_dim, cfg.width, cfg.embed_dim)
    prior.image_norm.fill_(float(img_emb.norm(dim=-1).mean()))
    opt = torch.optim.AdamW(prior.parameters(), lr=cfg.prior_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 2)

    def prior_loss(step: int) -> Tensor:
        idx = torch.randint(0, len(img_emb), (cfg.prior_batch,), generator=gen)
        gid = group[idx]
        pred = prior(text_out.text_embeds[gid], text_out.last_hidden_state[gid], mask[gid])
        target_e = F.normalize(img_emb[idx], dim=-1)
        txt = F.normalize(text_out.text_embeds[gid], dim=-1)
        return F.mse_loss(pred, target_e) * cfg.embed_dim + cfg.prior_contrastive * contrastive_loss(
            pred, txt, torch.tensor(1 / 0.07), gid)

    losses = fit("prior", opt, cfg.prior_steps, cfg.prior_lr, prior_loss, log, log_every=250)
    finish_stage("prior", (prior,), losses, t, report)
    save_net(prior, out / "toy_prior", PRIOR_FORMAT)


def write_toy_stats(out: Path, embeddings: np.ndarray, n: int) -> dict[str, Any]:
    """The stats store of the toy training images."""
    from ovi_cli.encoders import Encoders
    from ovi_stats.store import write_store

    encoders = Encoders.load(str(out / "prior"), device="cpu")
    files = [f"toy://train/{i:05d}" for i in range(len(embeddings))]
    store = write_store(out / "stats", embeddings.astype(np.float32), files,
                        encoder={"source": "toy", "fingerprint": encoders.fingerprint()},
                        source_dir=None, index="flat")
    desc = dict(store.describe())
    desc["path"] = "stats"  # relative to the models folder, which moves (e.g. into the package)
    return desc


@torch.no_grad()
def _zero_shot(tok, text_model, vision_model, images: np.ndarray, scenes) -> float | None:
    """Held-out single-shape images classified among all 24 'a COLOUR SHAPE' prompts."""
    prompts = [f"a {c} {s}" for c in COLOURS for s in SHAPES]
    enc = tok(prompts, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt")
    txt = F.normalize(text_model(**enc).text_embeds, dim=-1)
    keep = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
    if not keep:
        return None
    img = F.normalize(vision_model(pixel_values=pixels_from_uint8(images[keep])).image_embeds, dim=-1)
    pred = (img @ txt.T).argmax(1)
    truth = torch.tensor([prompts.index(f"a {scenes[i].objects[0][0]} {scenes[i].objects[0][1]}") for i in keep])
    return float((pred == truth).float().mean())
