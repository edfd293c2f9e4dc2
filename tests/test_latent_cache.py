"""The latent cache: training from cached latents gives the loss of training from the videos."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from demo_helpers import REPO

from datamodules.latent_cache import build_latent_cache, encoders_fingerprint, ensure_latent_cache
from datamodules.video_datamodule import VideoPoseDataModule
from unianimate.batch import VideoBatch
from unianimate.models.frozen import FrozenEncoders
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate
from unianimate.module import UniAnimateModule


def tiny_module(root, local_image_stream: bool = False) -> UniAnimateModule:
    init = yaml.safe_load((REPO / "configs" / "model" / "tiny.yaml").read_text())["init_args"]
    torch.manual_seed(0)
    init["local_image_stream"] = local_image_stream
    model = UniAnimate(UNet3D(**init.pop("unet")["init_args"]), **init)
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


def test_cache_with_frames_trains_the_local_image_stream_alike(demo_root, tmp_path):
    # Before: a cache had no pixels, so a denoiser with the local-image stream could not use it.
    module = tiny_module(demo_root, local_image_stream=True)
    train = str(demo_root / "synthetic" / "train")
    build_latent_cache(train, tmp_path, module.encoders, 64, 48, dtype="float32", frames=True, progress=False)
    live, cached = first_batch(train, cache=False), first_batch(str(tmp_path), cache=True)
    assert live.key == cached.key and torch.equal(cached.video, live.video)  # the loader's own pixels
    assert torch.equal(cached.ref_image, live.ref_image)  # the reference too (local_image_training)
    latents_a, cond_a = module.conditions(live, training=True)
    latents_b, cond_b = module.conditions(cached, training=True)
    assert torch.equal(cond_b.local_image, cond_a.local_image)
    generator = torch.Generator().manual_seed(0)
    t, noise, first = module.objective.draw(latents_a, generator)
    with torch.no_grad():
        loss_a = module.objective(module.denoiser, latents_a, cond_a, t, noise, first).loss
        loss_b = module.objective(module.denoiser, latents_b, cond_b, t, noise, first).loss
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)


def test_ensure_builds_once_and_again_for_other_encoders(demo_root, tmp_path):
    train = str(demo_root / "synthetic" / "train")
    tiny = FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"))  # samples posteriors
    out = ensure_latent_cache(train, tmp_path / "cache", tiny, 64, 48)
    assert tiny.sample_posterior  # put back after the build (the cache holds posterior means)
    shard = next(out.glob("cache-*.tar"))
    built = shard.stat().st_mtime_ns
    assert ensure_latent_cache(train, out, tiny, 64, 48) == out and shard.stat().st_mtime_ns == built
    demo = FrozenEncoders(str(demo_root / "tiny_clip"), str(REPO / "assets" / "demo_vae"))
    ensure_latent_cache(train, out, demo, 64, 48)
    assert json.loads((out / "manifest.json").read_text())["encoders"] == encoders_fingerprint(demo)
    assert first_batch(str(out), cache=True).latent.shape[-2:] == (16, 12)  # the /4 autoencoder's
    assert not (tmp_path / "cache.building").exists()


def test_fit_builds_the_cache_and_validates_on_pixels(demo_root, tmp_path):
    from demo_helpers import demo_overrides

    from unianimate.cli import main

    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    args = demo_overrides(demo_root, run_dir, max_steps=2)
    args.append(f"--data.init_args.latent_cache_dir={cache}")
    main(["fit", *args])
    assert (cache / "manifest.json").is_file()
    assert (run_dir / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "version_0" / "samples" / "final.mp4").stat().st_size > 0  # held-out pixels


def test_cache_skips_what_does_not_decode_and_refuses_nothing(demo_root, tmp_path, capsys):
    import numpy as np

    from unianimate.errors import InputError

    encoders = FrozenEncoders(
        str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"), sample_posterior=False
    )
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a-good.tar").symlink_to(next((demo_root / "synthetic" / "train").glob("*.tar")))
    (shards / "b-noise.tar").write_bytes(np.random.default_rng(0).bytes(20_000))
    assert build_latent_cache(str(shards), tmp_path / "cache", encoders, 64, 48, progress=False)
    assert "latent cache: 1 samples skipped (bad_tar=1)" in capsys.readouterr().out
    (shards / "a-good.tar").unlink()
    with pytest.raises(InputError, match="no sample of .* could be cached \\(skipped: bad_tar=1\\)"):
        build_latent_cache(str(shards), tmp_path / "cache2", encoders, 64, 48, progress=False)


def test_cache_tool_keeps_frames_when_asked(demo_root, tmp_path):
    import subprocess
    import sys
    import tarfile

    out = tmp_path / "cache"
    command = [
        sys.executable,
        str(REPO / "tools" / "cache_latents.py"),
        str(demo_root / "synthetic" / "train"),
    ]
    command += [
        str(out),
        "--clip-path",
        str(demo_root / "tiny_clip"),
        "--vae-path",
        str(demo_root / "tiny_vae"),
    ]
    subprocess.run([*command, "--height", "64", "--width", "48", "--frames"], check=True, cwd=REPO)
    with tarfile.open(next(out.glob("cache-*.tar"))) as tar:
        names = tar.getnames()
    assert any(n.endswith(".frames.npy") for n in names) and any(n.endswith(".latents.npy") for n in names)
    assert first_batch(str(out), cache=True).video.shape == (2, 3, 4, 64, 48)


def test_a_cache_given_and_one_to_make_are_one_line_of_error(demo_root, tmp_path):
    from unianimate.errors import InputError

    with pytest.raises(InputError, match="data.use_latent_cache .* and data.latent_cache_dir .*: set one"):
        VideoPoseDataModule(str(tmp_path), use_latent_cache=True, latent_cache_dir=str(tmp_path / "c"))


def test_cached_frames_without_their_colour_code_are_skipped(demo_root, tmp_path):
    # Before: a KeyError out of the loader instead of a counted skip.
    import numpy as np
    import webdataset as wds

    from datamodules.clips import ClipExample
    from datamodules.stream import SkipSample

    encoders = FrozenEncoders(
        str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"), sample_posterior=False
    )
    shard = build_latent_cache(
        str(demo_root / "synthetic" / "train"), tmp_path, encoders, 64, 48, frames=True, progress=False
    )[0]
    sample = next(iter(wds.WebDataset(str(shard), shardshuffle=False)))
    example = ClipExample(4, 1, 64, 48, use_latent_cache=True)
    assert example(dict(sample), np.random.default_rng(0))["video"].shape == (4, 96, 48)
    meta = json.loads(sample["json"])
    del meta["latent_cache"]["colour"]
    with pytest.raises(SkipSample, match="bad_latents"):
        example({**sample, "json": json.dumps(meta).encode()}, np.random.default_rng(0))
