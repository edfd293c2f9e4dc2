"""Train the demo's autoencoder: a small diffusers ``AutoencoderKL`` for the synthetic figures.

    python tools/train_demo_vae.py assets/demo_vae        # the shipped one: defaults, 1 thread

The SD-2.1 VAE of the paper downsamples by 8; at the demo's 64x48 that leaves 8x6 latents, too
few to draw a figure in. This one downsamples by 4 (64x48 -> 16x12, 4 channels; block widths
32, 96, 96, no attention: 1.96 M parameters, 7.9 MB of safetensors), trained on 4,800 frames of
400 synthetic identities (``datamodules.synthetic``), none of them the demo's held-out ones
(10_000 and up), on random 32x32 crops (it is convolutional), with MSE + a small KL term on
posterior samples, AdamW, 12,000 steps of 16 crops, cosine learning rate 1e-3 -> 1e-4. It is
written with ``save_pretrained`` (safetensors) and loaded with ``from_pretrained``, the path the
SD VAE takes (``unianimate.models.frozen.FrozenEncoders``). Its ``scaling_factor`` is 1 / std of
the latents (posterior samples of 2,048 training frames), as SD's 0.18215 was made, stored in
its config.

Deterministic (seeded data, initialisation and batches; one thread by default): run again with
the defaults, it wrote byte-identical files (same sha256). At the end it prints the reconstruction
PSNR of held-out frames (32 frames of the 8 held-out identities). The shipped run: 3,812 s wall on
this 2-core machine, one thread, with a second such job beside it (alone: 3,575 s, 60 minutes);
held-out PSNR 31.07 dB (posterior sample; 31.08 dB from the mean), scaling_factor 0.54042.
Held-out PSNR on the way: 25.3 dB at step 1,500, 28.5 at 5,000, 30.0 at 7,000, 30.8 at 11,500.
The previous defaults (widths 32, 64, 64; 2,500 steps) gave 26.5 dB; widths 64, 128, 128 (3.7 M
parameters, 1.9 times the time per step; a 6,000-step schedule, stopped at step 5,500) was at
30.1 dB.

Frames are measured here as RGB straight from the renderer. The demo's shards store them as
lossless 4:2:0 H.264, whose halved colour resolution alone is 33.3 dB from the RGB frames; on such
frames (the held-out ones, through that round trip) this autoencoder, trained on RGB frames,
reconstructs at 27.8 dB; ``unianimate test``'s "autoencoder reconstruction" row on the demo's test
clips says 27.7 dB. Training on round-tripped frames is the next thing to try for that ceiling.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from datamodules.synthetic import make_synthetic_video

HEIGHT, WIDTH = 64, 48
HELD_OUT_IDENTITIES = range(10_000, 10_008)  # the demo's validation identities
TRAIN_IDENTITY_BASE = 20_000  # training identities, disjoint from the demo's held-out ones
CHANNELS = (32, 96, 96)  # block widths of the shipped autoencoder


def build_vae(
    channels: tuple[int, ...] = CHANNELS, attention: bool = False, latent_channels: int = 4
) -> AutoencoderKL:
    """The demo architecture: three levels (/4), 4 latent channels; by default no attention in the
    middle block (a purely convolutional autoencoder, as cheap on CPU as it gets)."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=tuple(channels),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=HEIGHT,
        mid_block_add_attention=attention,
    )


def synthetic_frames(identities, frames_per_video: int, seed: int) -> torch.Tensor:
    """uint8 frames of the given identities -> float (n, 3, H, W) in [-1, 1]."""
    videos = [
        make_synthetic_video(identity, frames_per_video, HEIGHT, WIDTH, seed * 1_000_003 + identity)[0]
        for identity in identities
    ]
    frames = torch.from_numpy(np.concatenate(videos)).permute(0, 3, 1, 2).float()
    return frames / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame PSNR of two frame batches in [-1, 1], measured on [0, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).square().flatten(1).mean(1).double()
    return float((10 * torch.log10(1 / mse)).mean())


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, frames: torch.Tensor, sample: bool, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for chunk in frames.split(32):
        posterior = vae.encode(chunk).latent_dist
        latent = posterior.sample(generator) if sample else posterior.mode()
        out.append(vae.decode(latent).sample)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-5)
    parser.add_argument("--identities", type=int, default=400, help="training identities")
    parser.add_argument("--frames-per-identity", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs="+", default=list(CHANNELS))
    parser.add_argument("--latent-channels", type=int, default=4)
    parser.add_argument("--attention", action="store_true", help="self-attention in the middle block")
    parser.add_argument("--crop", type=int, default=32, help="train on random square crops (0: whole frames)")
    parser.add_argument("--log-every", type=int, default=500)
    args = parser.parse_args()

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny activations otherwise slow the CPU down many times
    torch.manual_seed(args.seed)
    train = synthetic_frames(
        range(TRAIN_IDENTITY_BASE, TRAIN_IDENTITY_BASE + args.identities), args.frames_per_identity, args.seed
    )
    held_out = synthetic_frames(HELD_OUT_IDENTITIES, 4, args.seed + 1)
    print(
        f"data: {len(train)} training frames, {len(held_out)} held-out frames ({time.perf_counter() - start:.0f} s)"
    )

    vae = build_vae(tuple(args.channels), args.attention, args.latent_channels)
    print(f"AutoencoderKL: {sum(p.numel() for p in vae.parameters()):,} parameters")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 100

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to a tenth
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(args.seed)
    vae.train()
    for step in range(args.steps):
        batch = train[torch.randint(len(train), (args.batch_size,), generator=generator)]
        if args.crop:  # a random window (convolutional model: what it learns applies to whole frames)
            top = int(torch.randint(HEIGHT - args.crop + 1, (1,), generator=generator))
            left = int(torch.randint(WIDTH - args.crop + 1, (1,), generator=generator))
            batch = batch[:, :, top : top + args.crop, left : left + args.crop]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        mse = (recon - batch).square().mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent dimension
        loss = mse + args.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            vae.eval()
            held = psnr(reconstruct(vae, held_out[::4], sample=True), held_out[::4])
            vae.train()
            db = 10 * math.log10(4 / max(mse.item(), 1e-12))
            print(
                f"step {step:5d}  mse {mse.item():.5f} ({db:.1f} dB)  kl/dim {kl.item():.3f}  "
                f"held-out {held:.2f} dB  {time.perf_counter() - start:.0f} s",
                flush=True,
            )

    vae.eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(args.seed)
        latents = torch.cat([vae.encode(c).latent_dist.sample(generator) for c in train[:2048].split(64)])
    scaling_factor = float(1 / latents.std())
    vae.register_to_config(scaling_factor=round(scaling_factor, 5))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.out_dir, safe_serialization=True)
    recon_mean = psnr(reconstruct(vae, held_out, sample=False), held_out)
    recon_sample = psnr(reconstruct(vae, held_out, sample=True), held_out)
    summary = {
        "scaling_factor": round(scaling_factor, 5),
        "held_out_psnr_mean_latent": round(recon_mean, 2),
        "held_out_psnr_sampled_latent": round(recon_sample, 2),
        "seconds": round(time.perf_counter() - start),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps(summary, indent=1))
    print(
        f"wrote {args.out_dir}: held-out reconstruction PSNR {recon_sample:.2f} dB (posterior sample), "
        f"{recon_mean:.2f} dB (mean); scaling_factor {scaling_factor:.5f}"
    )


if __name__ == "__main__":
    main()
