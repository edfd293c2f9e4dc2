"""Frozen CLIP + VAE from local save_pretrained folders (the same path real weights take)."""

from __future__ import annotations

import pytest
import torch

from unianimate.models.frozen import FrozenEncoders


@pytest.fixture(scope="module")
def encoders(demo_root) -> FrozenEncoders:
    return FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"), vae_chunk=3)


def test_frozen_and_always_in_eval_mode(encoders):
    assert not any(p.requires_grad for p in encoders.parameters())
    encoders.train()
    assert not any(m.training for m in encoders.modules())


def test_shapes_and_chunked_video_round_trip(encoders):
    video = torch.rand(2, 3, 5, 64, 48) * 2 - 1
    latents = encoders.encode_video(video, torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 5, 8, 6)
    assert encoders.decode_video(latents).shape == video.shape
    assert encoders.encode_clip(video[:, :, 0]).shape == (2, encoders.clip_dim)
    # Empty-text context: 77 tokens of the text tower's width, computed once from the weights.
    assert encoders.empty_text.shape == (77, encoders.context_dim)
    assert encoders.empty_text.abs().sum() > 0


def test_chunking_does_not_change_results(demo_root, encoders):
    whole = FrozenEncoders(
        str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"), vae_chunk=64, sample_posterior=False
    )
    chunked = FrozenEncoders(
        str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"), vae_chunk=2, sample_posterior=False
    )
    video = torch.rand(1, 3, 5, 64, 48) * 2 - 1
    torch.testing.assert_close(chunked.encode_video(video), whole.encode_video(video), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_is_safe(encoders):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents = encoders.encode_video(torch.rand(1, 3, 2, 64, 48) * 2 - 1)
        embeds = encoders.encode_clip(torch.rand(1, 3, 64, 48) * 2 - 1)
    assert latents.dtype == embeds.dtype == torch.float32 and torch.isfinite(latents).all()


def test_missing_paths_name_the_path_and_what_was_expected(demo_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"clip_path: no CLIP model .* at '{tmp_path / 'nope'}'"):
        FrozenEncoders(str(tmp_path / "nope"), str(demo_root / "tiny_vae"))
    with pytest.raises(FileNotFoundError, match="vae_path: no VAE"):
        FrozenEncoders(str(demo_root / "tiny_clip"), str(tmp_path))
