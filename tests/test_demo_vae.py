"""The demo's trained autoencoder (assets/demo_vae, made by tools/train_demo_vae.py).

It loads through the same code path as SD-2.1's VAE (``AutoencoderKL.from_pretrained`` inside
``FrozenEncoders``), downsamples by 4, takes its latent scale from its own config, and
reconstructs held-out synthetic frames (identities it never saw) at the 30 dB issue 12 asks for:
the tool measured 31.1 dB on 32 held-out frames; the 8 frames here give 31.2 dB.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from demo_helpers import REPO

from unianimate.metrics.frame_metrics import psnr

DEMO_VAE = REPO / "assets" / "demo_vae"


@pytest.fixture(scope="module")
def encoders(demo_root):
    from unianimate.models.frozen import FrozenEncoders

    return FrozenEncoders(clip_path=str(demo_root / "tiny_clip"), vae_path=str(DEMO_VAE))


def test_shipped_as_safetensors_with_its_scaling_factor(encoders):
    files = sorted(p.name for p in DEMO_VAE.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert (DEMO_VAE / "diffusion_pytorch_model.safetensors").stat().st_size < 8_000_000
    config = json.loads((DEMO_VAE / "config.json").read_text())
    assert config["_class_name"] == "AutoencoderKL" and config["latent_channels"] == 4
    # The latent scale comes from the folder's config (not SD's 0.18215) and is what encoding uses.
    assert encoders.scaling_factor == config["scaling_factor"] != 0.18215
    assert encoders.downsample_factor == 4


def _held_out_psnr(encoders) -> torch.Tensor:
    from datamodules.synthetic import make_synthetic_video

    # Two of the demo's held-out identities, motion the training never saw.
    frames = [make_synthetic_video(identity, 4, 64, 48, seed=123)[0] for identity in (10_001, 10_005)]
    video = torch.from_numpy(np.stack(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    latents = encoders.encode_video(video, torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 4, 16, 12)
    # Scaled latents have about unit spread, as SD's scaled latents do.
    assert 0.5 < float(latents.std()) < 2.0
    recon = encoders.decode_video(latents)
    flat = [((x + 1) / 2).transpose(1, 2).flatten(0, 1) for x in (recon, video)]
    return psnr(*flat)


def test_reconstructs_held_out_frames_at_30_db(encoders):
    """Issue 12's target, on held-out identities and motion (sampled latents, as training encodes)."""
    values = _held_out_psnr(encoders)
    assert float(values.mean()) >= 30.0, f"held-out reconstruction PSNR {values.tolist()}"
