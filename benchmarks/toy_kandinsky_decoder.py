"""Experiment: a toy decoder in the real `KandinskyV22Pipeline` format (MoVQ + image-conditioned U-Net).

Not part of the package; it measures whether such a decoder reaches recognisable images in a CPU budget.

    python benchmarks/toy_kandinsky_decoder.py OUT [--vq-steps 400] [--unet-steps 2000]

Trains, on CPU with one thread: a small `VQModel` (MoVQ, 64 px -> 32x32x4 latents) as an
autoencoder of the canonical-layout images, then a small `UNet2DConditionModel`
(`encoder_hid_dim_type="image_proj"`, `addition_embed_type="image"`) to predict the noise of
those latents given the shipped toy CLIP's image embedding (10% replaced by the zero-image
embedding, for classifier-free guidance). Saves the pipeline under OUT (loadable with
`ovi gen --decoder kandinsky22 --decoder-model OUT`), decodes real image embeddings of 24
training-pair images, and prints the oracle's accuracy on them and the time taken.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovi_plugins.toy.dataset import COLOURS, HELD_OUT_PAIRS, SHAPES, canonical_scene, make_arrays, render
from ovi_plugins.toy.preset import toy_paths
from ovi_plugins.toy.train import _lr, encode_in_batches, pixels_from_uint8


def build(embed_dim: int):
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    unet = UNet2DConditionModel(
        in_channels=4, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64),
        layers_per_block=1, encoder_hid_dim=embed_dim, encoder_hid_dim_type="image_proj",
        cross_attention_dim=32, attention_head_dim=8, resnet_time_scale_shift="scale_shift",
        class_embed_type=None, sample_size=32,
    )
    movq = VQModel(
        block_out_channels=[32, 64], down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        in_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, norm_type="spatial",
        num_vq_embeddings=256, out_channels=3, up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        vq_embed_dim=4,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085,
                              beta_end=0.012, clip_sample=False, prediction_type="epsilon")
    return unet, movq, scheduler


def main(argv: list[str] | None = None) -> dict:
    from diffusers import KandinskyV22Pipeline

    from ovi_cli.encoders import Encoders
    from ovi_plugins.toy.oracle import judge

    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--vq-steps", type=int, default=400)
    ap.add_argument("--unet-steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    enc = Encoders.load(str(toy_paths()["encoder"]))
    images, scenes = make_arrays(args.n, "train", args.seed)
    emb = encode_in_batches(lambda x: enc.image_encoder(pixel_values=x).image_embeds, pixels_from_uint8(images))
    zero = enc.zero_image_embeds()
    canon = np.stack([np.asarray(render(canonical_scene(s.objects))) for s in scenes])
    x = torch.from_numpy(canon).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    unet, movq, scheduler = build(enc.embed_dim)
    gen = torch.Generator().manual_seed(args.seed)

    t = time.perf_counter()
    opt = torch.optim.AdamW(movq.parameters(), lr=1e-3)
    for step in range(args.vq_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.vq_steps, 1e-3)
        idx = torch.randint(0, len(x), (args.batch,), generator=gen)
        out = movq(x[idx])
        loss = F.mse_loss(out.sample, x[idx]) + out.commit_loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.vq_steps - 1:
            print(f"movq step {step} loss {float(loss.detach()):.4f}", flush=True)
    movq.eval().requires_grad_(False)
    vq_s = time.perf_counter() - t
    with torch.no_grad():
        lat = torch.cat([movq.encode(x[i : i + 256]).latents for i in range(0, len(x), 256)])

    t = time.perf_counter()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    alphas = scheduler.alphas_cumprod
    for step in range(args.unet_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, args.unet_steps, 1e-3)
        idx = torch.randint(0, len(lat), (args.batch,), generator=gen)
        noise = torch.randn(lat[idx].shape, generator=gen)
        ts = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[ts].view(-1, 1, 1, 1)
        noisy = a.sqrt() * lat[idx] + (1 - a).sqrt() * noise
        cond = emb[idx].clone()
        drop = torch.rand(args.batch, generator=gen) < 0.1
        cond[drop] = zero
        pred = unet(noisy, ts, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample[:, :4]
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.unet_steps - 1:
            print(f"unet step {step} loss {float(loss.detach()):.4f}", flush=True)
    unet.eval().requires_grad_(False)
    unet_s = time.perf_counter() - t

    pipe = KandinskyV22Pipeline(unet=unet, scheduler=scheduler, movq=movq)
    pipe.save_pretrained(args.out)
    pipe.set_progress_bar_config(disable=True)
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    rng = np.random.default_rng(99)
    from ovi_plugins.toy.dataset import scene_for_objects

    objs = [[pairs[i % len(pairs)]] for i in range(24)]
    real = [render(scene_for_objects(o, rng)) for o in objs]
    e = enc.encode_images(real)
    t = time.perf_counter()
    with torch.no_grad():
        out = pipe(image_embeds=e, negative_image_embeds=zero.expand_as(e), height=64, width=64,
                   num_inference_steps=25, guidance_scale=4.0,
                   generator=torch.Generator().manual_seed(0)).images
    dec_s = time.perf_counter() - t
    acc = float(np.mean([judge(im, o).object_accuracy for im, o in zip(out, objs)]))
    exact = float(np.mean([judge(im, o).exact for im, o in zip(out, objs)]))
    colour = float(np.mean([judge(im, o).colour_accuracy for im, o in zip(out, objs)]))
    grid = np.concatenate([np.concatenate([np.asarray(r) for r in real[:12]], 1),
                           np.concatenate([np.asarray(o) for o in out[:12]], 1)], 0)
    from PIL import Image

    Image.fromarray(grid).save(args.out / "samples.png")
    report = {"oracle_object_acc": acc, "oracle_exact": exact, "oracle_colour_acc": colour, "movq_s": vq_s,
              "unet_s": unet_s, "decode_24_s": dec_s, "total_s": time.perf_counter() - t0,
              "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "experiment.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
