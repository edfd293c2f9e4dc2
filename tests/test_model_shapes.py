"""Tiny UniAnimate: shapes, frame counts, zero-initialised branches, dropout semantics, checkpointing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from einops import repeat

from unianimate.conditions import Conditions
from unianimate.models.resblock import ResBlock, TemporalConvStack
from unianimate.models.spatial_transformer import SpatialTransformer
from unianimate.models.temporal_transformer import TemporalTransformer
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
CTX = 32


def tiny(**unet_args: object) -> UniAnimate:
    args = dict(
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(0,),
        head_dim=16,
        context_dim=CTX,
        temporal_in_heads=3,
        dropout=0.0,
    )
    args.update(unet_args)
    return UniAnimate(UNet3D(**args), context_dim=CTX)  # type: ignore[arg-type]


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight so that the zero-initialised branches contribute."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def inputs(
    b: int = 2, f: int = 3, h: int = 4, w: int = 6, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor, Conditions]:
    gen = torch.Generator().manual_seed(seed)
    big_h, big_w = 8 * h, 8 * w
    cond = Conditions(
        pose=torch.rand(b, 3, f, big_h, big_w, generator=gen),
        ref_pose=torch.rand(b, 3, big_h, big_w, generator=gen),
        ref_latent=torch.randn(b, 4, h, w, generator=gen),
        clip_embed=torch.randn(b, CTX, generator=gen),
        local_image=torch.rand(b, 3, big_h, big_w, generator=gen),
    )
    x = torch.randn(b, 4, f, h, w, generator=gen)
    t = torch.randint(0, 1000, (b,), generator=gen)
    return x, t, cond


@pytest.mark.parametrize("frames", [16, 32])
def test_unet_sees_f_plus_one_frames(frames: int) -> None:
    model = randomise(tiny()).eval()
    seen = []
    model.unet.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape)))
    x, t, cond = inputs(b=1, f=frames, h=4, w=4)
    with torch.no_grad():
        out = model(x, t, cond)
    assert seen == [(1, 12, frames + 1, 4, 4)]
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_inputs_not_modified() -> None:
    model = randomise(tiny()).eval()
    x, t, cond = inputs()
    before = [
        v.clone()
        for v in (x, t, cond.pose, cond.ref_pose, cond.ref_latent, cond.clip_embed, cond.local_image)
    ]
    with torch.no_grad():
        model(x, t, cond)
    after = (x, t, cond.pose, cond.ref_pose, cond.ref_latent, cond.clip_embed, cond.local_image)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_zero_initialised_branches_are_no_ops() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 4, 6)
    assert torch.equal(TemporalTransformer(32, 2, 16)(x), x)
    assert torch.equal(TemporalConvStack(32, 0.0)(x), x)
    frames = x.transpose(1, 2).reshape(10, 32, 4, 6)
    assert torch.equal(SpatialTransformer(32, 16, CTX)(frames, torch.randn(10, 7, CTX)), frames)
    block = ResBlock(32, 32, 128, 0.0)
    assert torch.equal(block(frames, torch.randn(10, 128), 5), frames)
    model = tiny()
    x, t, cond = inputs()
    assert torch.equal(model(x, t, cond), torch.zeros_like(x))  # zero head conv


def test_all_dropped_equals_unconditional() -> None:
    model = randomise(tiny()).eval()
    x, t, cond = inputs()
    names = ("pose", "clip", "local_image", "reference")
    with torch.no_grad():
        uncond = model(x, t, Conditions())
        dropped = model(x, t, cond.with_drop({n: torch.ones(2, dtype=torch.bool) for n in names}))
        full = model(x, t, cond)
        mixed = model(x, t, cond.with_drop({n: torch.tensor([True, False]) for n in names}))
    assert torch.equal(dropped, uncond)
    assert (full - uncond).abs().max() > 1e-3  # the conditions matter
    torch.testing.assert_close(mixed[0], uncond[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[1], full[1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["pose", "clip", "local_image", "reference"])
def test_each_drop_zeroes_its_condition(name: str) -> None:
    model = randomise(tiny()).eval()
    x, t, cond = inputs()
    field = {"pose": ("pose",), "clip": ("clip_embed",), "local_image": ("local_image",)}
    removed = Conditions(
        **{**cond.__dict__, **{f: None for f in field.get(name, ("ref_latent", "ref_pose"))}}
    )
    with torch.no_grad():
        dropped = model(x, t, cond.with_drop({name: torch.ones(2, dtype=torch.bool)}))
        assert torch.equal(dropped, model(x, t, removed))


def test_first_frame_is_the_repeated_stream() -> None:
    model = randomise(tiny()).eval()
    x, t, cond = inputs()
    f = x.shape[2]
    with torch.no_grad():
        out = model(x, t, cond)
        stream = model.local_image_encoder(repeat(cond.local_image, "b c h w -> b c f h w", f=f))
        no_first = Conditions(**{**cond.__dict__, "local_image": None})
        concat = model.concat_features(no_first, x) + stream
        ref = model.denoise(x, t, concat, model.reference(cond, x), model.context(cond, 2))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def _grads(model: UniAnimate) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, t, cond = inputs()
    out = model(x, t, cond)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("other", [{"checkpointing": True}, {"attention": "math"}])
def test_same_outputs_and_gradients(other: dict) -> None:
    reference = randomise(tiny()).eval()
    variant = tiny(**other).eval()
    variant.load_state_dict(reference.state_dict())
    out_a, grads_a = _grads(reference)
    out_b, grads_b = _grads(variant)
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == len(list(reference.parameters()))
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-5, rtol=1e-4, msg=name)


def test_set_empty_text_is_used_and_not_saved() -> None:
    model = randomise(tiny()).eval()
    x, t, cond = inputs()
    with torch.no_grad():
        before = model(x, t, cond)
        model.set_empty_text(torch.randn(1, 77, CTX))
        after = model(x, t, cond)
    assert not torch.equal(before, after)
    assert "empty_text" not in model.state_dict()


@pytest.mark.parametrize("preset", ["tiny", "unianimate"])
def test_presets_instantiate(preset: str) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--model", type=UniAnimate)
    cfg = parser.parse_object({"model": yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())})
    with torch.device("meta"):
        model = parser.instantiate(cfg).model
    assert isinstance(model, UniAnimate)
    expected = {"tiny": 1_219_532, "unianimate": 1_416_564_300}[preset]  # tiny: no full-resolution attention
    assert sum(p.numel() for p in model.parameters()) == expected


def test_mamba_temporal_modules() -> None:
    pytest.importorskip("unianimate.models.temporal_mamba")
    model = tiny(temporal="mamba").eval()
    kinds = {type(m).__name__ for m in model.unet.modules()}
    assert "TemporalMamba" in kinds and "TemporalTransformer" not in kinds
    x, t, cond = inputs(f=3)
    with torch.no_grad():
        assert model(x, t, cond).shape == x.shape


def test_runs_with_bfloat16_weights() -> None:
    """A model held in bf16 (e.g. a DeepSpeed bf16 strategy) runs without dtype mismatches."""
    model = randomise(tiny()).to(torch.bfloat16).eval()
    x, t, cond = inputs()
    cond = Conditions(
        **{k: v.bfloat16() if isinstance(v, torch.Tensor) else v for k, v in cond.__dict__.items()}
    )
    with torch.no_grad():
        out = model(x.bfloat16(), t, cond)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_condition_encoders_follow_the_latent_size() -> None:
    """A /4 autoencoder (the demo's): 64x48 pictures give 16x12 features, as its latents are; for /8
    latents the encoders pool to half the picture size first, exactly as the release does."""
    from model_helpers import tiny_unianimate

    from unianimate.models.condition_encoders import PixelEncoder

    torch.manual_seed(0)
    encoder = PixelEncoder(8, 32)
    pictures = torch.rand(2, 3, 3, 64, 48)
    assert encoder(pictures, (16, 12)).shape == (2, 8, 3, 16, 12)
    assert torch.equal(encoder(pictures, (8, 6)), encoder(pictures))  # the release's (H/2, W/2) pool
    model = tiny_unianimate()
    b, f = 2, 3
    cond = Conditions(
        pose=torch.rand(b, 3, f, 64, 48),
        ref_pose=torch.rand(b, 3, 64, 48),
        ref_latent=torch.randn(b, 4, 16, 12),
        clip_embed=torch.randn(b, 32),
        local_image=torch.rand(b, 3, 64, 48),
    )
    with torch.no_grad():
        out = model(torch.randn(b, 4, f, 16, 12), torch.tensor([10, 500]), cond)
    assert out.shape == (b, 4, f, 16, 12) and torch.isfinite(out).all()
