"""The latent cache: training from cached latents gives the loss of training from the videos."""

from __future__ import annotations

import pytest
import torch
import yaml
from demo_helpers import REPO

from datamodules.latent_cache import build_latent_cache
from datamodules.video_datamodule import VideoPoseDataModule
from unianimate.batch import VideoBatch
from unianimate.models.frozen import FrozenEncoders
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate
from unianimate.module import UniAnimateModule


def tiny_module(root) -> UniAnimateModule:
    init = yaml.safe_load((REPO / "configs" / "model" / "tiny.yaml").read_text())["init_args"]
    torch.manual_seed(0)
    model = UniAnimate(UNet3D(**init.pop("unet")["init_args"]), **{**init, "local_image_stream": False})
    for p in model.parameters():  # leave the zero-initialised no-op state: outputs depend on inputs
        p.data.add_(0.02 * torch.randn_like(p))
    encoders = FrozenEncoders(str(root / "tiny_clip"), str(root / "tiny_vae"), sample_posterior=False)
    return UniAnimateModule(model, encoders, ema_decay=None).eval()


def first_batch(shards: str, cache: bool) -> VideoBatch:
    dm = VideoPoseDataModule(shards, num_frames=4, height=64, width=48, batch_size=2, use_latent_cache=cache)
    return VideoPoseDataModule.to_float(next(iter(dm.train_dataloader())))


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float16", 2e-2)])
def test_cached_latents_give_the_same_loss(demo_root, tmp_path, dtype, rtol):
    module = tiny_module(demo_root)
    train = str(demo_root / "synthetic" / "train")
    build_latent_cache(train, tmp_path, module.encoders, 64, 48, dtype=dtype, progress=False)
    live, cached = first_batch(train, cache=False), first_batch(str(tmp_path), cache=True)
    assert live.key == cached.key and cached.video is None
    assert torch.equal(live.pose, cached.pose) and torch.equal(live.ref_pose, cached.ref_pose)

    latents_a, cond_a = module.conditions(live, training=True)
    latents_b, cond_b = module.conditions(cached, training=True)
    torch.testing.assert_close(latents_b, latents_a, rtol=rtol, atol=rtol * latents_a.abs().max().item())
    torch.testing.assert_close(cond_b.clip_embed, cond_a.clip_embed, rtol=rtol, atol=rtol)

    generator = torch.Generator().manual_seed(0)
    t, noise, first = module.objective.draw(latents_a, generator)
    with torch.no_grad():
        loss_a = module.objective(module.denoiser, latents_a, cond_a, t, noise, first).loss
        loss_b = module.objective(module.denoiser, latents_b, cond_b, t, noise, first).loss
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=rtol)


def test_cache_of_the_demo_autoencoder_is_read(demo_root, tmp_path):
    # Before: the reader assumed /8 latents and skipped every sample of a /4 autoencoder's cache.
    encoders = FrozenEncoders(
        str(demo_root / "tiny_clip"), str(REPO / "assets" / "demo_vae"), sample_posterior=False
    )
    assert encoders.downsample_factor == 4
    build_latent_cache(str(demo_root / "synthetic" / "train"), tmp_path, encoders, 64, 48, progress=False)
    batch = first_batch(str(tmp_path), cache=True)
    assert batch.latent.shape[-2:] == (16, 12) and batch.ref_latent.shape[-2:] == (16, 12)


def test_cache_refuses_sampled_posteriors_and_random_crops(demo_root, tmp_path):
    encoders = FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"))
    with pytest.raises(ValueError, match="sample_posterior=False"):
        build_latent_cache(str(demo_root / "synthetic" / "train"), tmp_path, encoders, 64, 48)
    with pytest.raises(ValueError, match="deterministic resize"):
        build_latent_cache(
            str(demo_root / "synthetic" / "train"), tmp_path, encoders, 64, 48, resize="random_crop"
        )
