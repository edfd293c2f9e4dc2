"""DDIMSampler behaviour: determinism, guidance, first-frame conditioning, noise prior (SPEC §4)."""

from __future__ import annotations

import pytest
import torch
from einops import repeat
from model_helpers import tiny_unianimate
from torch import Tensor, nn

from unianimate.conditions import Conditions
from unianimate.diffusion.noise import offset_noise
from unianimate.diffusion.sampling import DDIMSampler, ddim_step
from unianimate.diffusion.schedule import add_noise

B, F, H, W = 2, 4, 4, 4  # latent shape; pixels are 8x larger
SHAPE = (B, 4, F, H, W)


class ToyDenoiser(nn.Module):
    """Deterministic stand-in for UniAnimate: conv on x, timestep bias, pose and reference terms.

    Records every call as (x_t, t, cond).
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(4, 4, 3, padding=1)
        self.calls: list[tuple[Tensor, Tensor, Conditions]] = []

    def forward(self, x: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        self.calls.append((x.clone(), t.clone(), cond))
        v = 0.3 * self.conv(x) + 1e-3 * t.view(-1, 1, 1, 1, 1)
        if cond.pose is not None:  # one value per sample and frame
            v = v + cond.pose.mean(dim=(1, 3, 4))[:, None, :, None, None]
        if cond.ref_latent is not None:
            v = v + 0.1 * cond.ref_latent[:, :, None]
        return v


def make_cond(b: int = B, f: int = F) -> Conditions:
    g = torch.Generator().manual_seed(1)
    return Conditions(
        pose=torch.rand(b, 3, f, 8 * H, 8 * W, generator=g),
        ref_pose=torch.rand(b, 3, 8 * H, 8 * W, generator=g),
        ref_latent=torch.randn(b, 4, H, W, generator=g),
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_seeded_determinism():
    sampler = DDIMSampler(num_steps=5)
    model, cond = ToyDenoiser(), make_cond()
    a = sampler.sample(model, cond, SHAPE, gen(0))
    b = sampler.sample(model, cond, SHAPE, gen(0))
    c = sampler.sample(model, cond, SHAPE, gen(1))
    assert a.shape == SHAPE and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_guidance_scale_one_is_one_conditional_pass():
    sampler = DDIMSampler(num_steps=5, guidance_scale=1.0)
    model, cond = ToyDenoiser(), make_cond()
    out = sampler.sample(model, cond, SHAPE, gen(3))
    assert len(model.calls) == len(sampler.timesteps) == 5  # release spacing: 801, 601, ..., 1
    assert all(c is cond for _, _, c in model.calls)

    x = sampler.initial_latent(SHAPE, gen(3))  # the same noise, then the plain conditional DDIM loop
    for t in sampler.timesteps:
        x = ddim_step(sampler.scheduler, model(x, torch.full((B,), t), cond), t, x)[1]
    assert torch.equal(out, x)


def test_guidance_uses_all_dropped_unconditional_pass():
    sampler = DDIMSampler(num_steps=5, guidance_scale=2.5)
    model, cond = ToyDenoiser(), make_cond()
    sampler.sample(model, cond, SHAPE, gen(0))
    assert len(model.calls) == 2 * len(sampler.timesteps)
    uncond = [c for _, _, c in model.calls[1::2]]
    assert all(c.pose is None and c.ref_latent is None and c.ref_pose is None for c in uncond)
    assert all(c.clip_embed is None and c.local_image is None for c in uncond)

    x, t = torch.randn(SHAPE, generator=gen(5)), 500
    tt = torch.full((B,), t)
    v_c, v_u = model(x, tt, cond), model(x, tt, Conditions())
    assert torch.allclose(sampler.guided_v(model, x, t, cond), v_u + 2.5 * (v_c - v_u), atol=1e-6)
    assert model.calls[-1][1].dtype == torch.int64


def test_first_frame_conditioning_keeps_frame_zero():
    sampler = DDIMSampler(num_steps=5)
    model, cond = ToyDenoiser(), make_cond()
    first = torch.randn(B, 4, H, W, generator=gen(9))
    out = sampler.sample(model, cond, SHAPE, gen(0), first_frame_latent=first)
    assert torch.equal(out[:, :, 0], first)
    assert len(model.calls) == 2 * len(sampler.timesteps)
    assert all(torch.equal(x[:, :, 0], first) for x, _, _ in model.calls)  # cond and uncond passes
    free = sampler.sample(ToyDenoiser(), cond, SHAPE, gen(0))
    assert not torch.allclose(free[:, :, 1:], out[:, :, 1:])  # the conditioning reaches other frames


def test_noise_prior():
    cond = make_cond()
    sampler = DDIMSampler(num_steps=5, noise_prior_t=949)
    prior = torch.randn(B, 4, H, W, generator=gen(4))
    got = sampler.initial_latent(SHAPE, gen(2), prior)
    want = add_noise(
        sampler.scheduler,
        repeat(prior, "b c h w -> b c f h w", f=F),
        offset_noise(SHAPE, 0.1, gen(2)),
        torch.full((B,), 949),
    )
    assert torch.equal(got, want)
    # sample() falls back to the reference latent as the prior
    a = sampler.sample(ToyDenoiser(), cond, SHAPE, gen(2))
    b = sampler.sample(ToyDenoiser(), cond, SHAPE, gen(2), prior_latent=cond.ref_latent)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise_prior_t"):
        DDIMSampler(num_steps=5).initial_latent(SHAPE, gen(0), prior)
    with pytest.raises(ValueError, match="prior_latent"):
        sampler.sample(ToyDenoiser(), Conditions(), SHAPE, gen(0))


def test_trailing_spacing_starts_at_999_and_stays_finite():
    sampler = DDIMSampler(num_steps=10, spacing="trailing")
    assert sampler.timesteps[0] == 999 and len(sampler.timesteps) == 10
    out = sampler.sample(ToyDenoiser(), make_cond(), SHAPE, gen(0))
    assert torch.isfinite(out).all()


# ---- the real tiny UniAnimate ----------------------------------------------------------------


def test_real_tiny_model():
    model = tiny_unianimate()
    cond = make_cond()
    cond.clip_embed = torch.randn(B, 32, generator=gen(6))
    cond.local_image = torch.rand(B, 3, 8 * H, 8 * W, generator=gen(7))
    sampler = DDIMSampler(num_steps=3)
    first = torch.randn(B, 4, H, W, generator=gen(8))
    a = sampler.sample(model, cond, SHAPE, gen(0), first_frame_latent=first)
    b = sampler.sample(model, cond, SHAPE, gen(0), first_frame_latent=first)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert torch.equal(a[:, :, 0], first)

    seen: list[Tensor] = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :, 0].clone()))
    DDIMSampler(num_steps=3, guidance_scale=1.0).sample(model, cond, SHAPE, gen(0), first_frame_latent=first)
    handle.remove()
    assert len(seen) == 4 and all(torch.equal(s, first) for s in seen)
