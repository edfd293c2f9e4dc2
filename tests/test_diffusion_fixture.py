"""The schedule, DDIM steps, guidance, noise prior and full sampling loop against the release's numbers.

Fixture: shared/fixtures/official_unianimate/diffusion.safetensors (README §5). Tables, timesteps,
q_sample and single steps: 1e-6 absolute. The release's float32 arithmetic cannot be replayed op
for op: a single step here already lands 1-2 float32 ulps (up to 4.8e-7) off the stored one, and
over the 31-step guided loop these last-bit differences add up to about 1e-6 (1.07e-6 on this
2-core Xeon with torch 2.13; below 1e-6 on the machine that first wrote this test), so a 1e-6
bound on the loop tests one machine's rounding noise. The loop is therefore checked twice:
exactly, in float64, against the README's formulas (``reference_loop_float64``: same operations,
so bit-identical on any IEEE machine), and in float32 against the release's stored loop with the
README's documented tolerance for float32 loops, 1.4e-6.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unianimate.conditions import Conditions
from unianimate.diffusion import sampling
from unianimate.diffusion.noise import offset_noise
from unianimate.diffusion.sampling import DDIMSampler, ddim_step
from unianimate.diffusion.schedule import (
    add_noise,
    make_sampling_scheduler,
    make_train_scheduler,
    previous_timestep,
    release_timesteps,
    v_target,
    x0_from_v,
)

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "official_unianimate"
    / "diffusion.safetensors"
)
ATOL = 1e-6
LOOP_ATOL = 1.4e-6  # fixture README §5: a float32 31-step loop reproduces the release's to 1.4e-6


@pytest.fixture(scope="module")
def fx() -> dict[str, torch.Tensor]:
    if not FIXTURE.exists():
        pytest.skip(f"official diffusion fixture not found at {FIXTURE}")
    from safetensors.torch import load_file

    return load_file(str(FIXTURE))


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape
    err = (a.double() - b.double()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


def test_tables(fx):
    sched = make_train_scheduler()
    close(sched.betas, fx["betas"], 1e-12)
    close(sched.alphas_cumprod, fx["alphas_cumprod"], 1e-12)
    assert sched.alphas_cumprod[-1] == 0 and sched.betas[-1] == 1
    sampler_sched = make_sampling_scheduler(30)
    close(sampler_sched.alphas_cumprod, fx["alphas_cumprod"], 1e-12)


@pytest.mark.parametrize("n", [25, 30, 50])
def test_ddim_timesteps(fx, n):
    sched = make_sampling_scheduler(n)
    steps = sched.timesteps.tolist()
    assert steps == fx[f"ddim{n}.steps"].tolist() == release_timesteps(n)
    assert [previous_timestep(sched, t) for t in steps] == fx[f"ddim{n}.prev_steps"].tolist()
    if n == 30:
        assert len(steps) == 31 and sched.config.num_train_timesteps // sched.num_inference_steps == 33
    # the last step lands on abar[0], which is diffusers' final_alpha_cumprod (set_alpha_to_one=False)
    assert previous_timestep(sched, steps[-1]) == 0
    assert sched.final_alpha_cumprod == sched.alphas_cumprod[0] == fx["alphas_cumprod"][0]


def test_q_sample_v_and_x0(fx):
    sched = make_train_scheduler()
    t = fx["qs.t"]
    close(add_noise(sched, fx["qs.x0"], fx["qs.noise"], t), fx["qs.xt"])
    close(v_target(sched, fx["qs.x0"], fx["qs.noise"], t), fx["qs.v"])
    close(x0_from_v(sched, fx["qs.xt"], fx["qs.v"], t), fx["qs.x0_from_v"])


@pytest.mark.parametrize("name", ["step1", "step2"])
def test_single_ddim_step(fx, name):
    sched = make_sampling_scheduler(30)
    for i, t in enumerate(fx[f"{name}.t"].tolist()):
        x0, x_prev = ddim_step(sched, fx[f"{name}.v"][i : i + 1], t, fx[f"{name}.xt"][i : i + 1])
        close(x0, fx[f"{name}.x0_pred"][i : i + 1])
        close(x_prev, fx[f"{name}.xt_prev"][i : i + 1])


def test_diffusers_step_differs_only_by_rounding(fx):
    """Why `ddim_step` exists: diffusers' DDIMScheduler.step takes the same path (same abar_prev,
    also after t = 1) but rounds epsilon differently, about 1e-6 off the release at t = 1."""
    sched = make_sampling_scheduler(30)
    for name in ("step1", "step2"):
        for i, t in enumerate(fx[f"{name}.t"].tolist()):
            out = sched.step(fx[f"{name}.v"][i : i + 1], t, fx[f"{name}.xt"][i : i + 1])
            close(out.pred_original_sample, fx[f"{name}.x0_pred"][i : i + 1])
            close(out.prev_sample, fx[f"{name}.xt_prev"][i : i + 1], 2e-6)


def test_guided_step(fx):
    sampler = DDIMSampler(guidance_scale=float(fx["cfgstep.guide_scale"]))
    t = int(fx["cfgstep.t"])

    def model(x, tt, cond):
        return fx["cfgstep.v_uncond"] if cond.pose is None else fx["cfgstep.v_cond"]

    cond = Conditions(pose=torch.zeros(1, 3, 3, 8, 8))
    v = sampler.guided_v(model, fx["cfgstep.xt"], t, cond)
    x0, x_prev = ddim_step(sampler.scheduler, v, t, fx["cfgstep.xt"])
    close(x0, fx["cfgstep.x0_pred"])
    close(x_prev, fx["cfgstep.xt_prev"])


def test_prior_noise(fx):
    close(fx["prior.base_noise"] + 0.1 * fx["prior.offset_noise"], fx["prior.noise"])
    ref = fx["prior.ref_latent"]
    assert torch.equal(ref, ref[:, :, :1].expand_as(ref))  # the release repeats one latent
    t = torch.full((1,), 949, dtype=torch.int64)
    close(add_noise(make_train_scheduler(), ref, fx["prior.noise"], t), fx["prior.x_T"])


def test_offset_noise_draw_order():
    shape = (2, 4, 3, 5, 6)
    got = offset_noise(shape, 0.1, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    base = torch.randn(shape, generator=g)
    offset = torch.randn(2, 4, 3, 1, 1, generator=g)
    assert torch.equal(got, base + 0.1 * offset)


def _stand_in(inputs: list[torch.Tensor]):
    """The README's closed-form stand-in model: v = 0.5 x + 0.001 t (conditional), 0.25 x (not)."""

    def model(x, t, cond):
        if cond.pose is None:
            return 0.25 * x
        inputs.append(x.clone())
        return 0.5 * x + 0.001 * t.to(x.dtype).view(-1, 1, 1, 1, 1)

    return model


def _sample_loop(fx, monkeypatch, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """sample(): noise prior at t = 949 from the stored noise, then the 31-step guided loop."""
    # The release's RNG stream is not reproducible here; feed its stored noise to the sampler.
    noise = fx["prior.noise"].to(dtype)
    monkeypatch.setattr(sampling, "offset_noise", lambda *args, **kwargs: noise.clone())
    inputs: list[torch.Tensor] = []
    sampler = DDIMSampler(num_steps=30, guidance_scale=2.5, noise_prior_t=949)
    cond = Conditions(pose=torch.zeros(1, 3, 4, 32, 32))
    prior = fx["prior.ref_latent"][:, :, 0].to(dtype)
    out = sampler.sample(_stand_in(inputs), cond, (1, 4, 4, 4, 4), torch.Generator(), prior_latent=prior)
    return out, inputs


def reference_loop_float64(fx) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """README §5 written out in float64: x_T = q_sample(ref, 949, noise); for each of the release's
    31 timesteps, v = v_u + 2.5 (v_c - v_u), x0 = sqrt(abar) x - sqrt(1 - abar) v,
    eps = (sqrt(1 / abar) x - x0) / sqrt(1 / abar - 1), x <- sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps
    with abar_prev = abar[max(t - 33, 0)]."""
    abar = fx["alphas_cumprod"]
    ref = fx["prior.ref_latent"][:, :, :1].double().expand(-1, -1, 4, -1, -1)
    x = abar[949].sqrt() * ref + (1 - abar[949]).sqrt() * fx["prior.noise"].double()
    inputs = []
    for t in fx["ddim30.steps"].tolist():
        inputs.append(x)
        v_c, v_u = 0.5 * x + 0.001 * float(t), 0.25 * x
        v = v_u + 2.5 * (v_c - v_u)
        a, a_prev = abar[t], abar[max(t - 33, 0)]
        x0 = a.sqrt() * x - (1 - a).sqrt() * v
        eps = ((1 / a).sqrt() * x - x0) / (1 / a - 1).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x, inputs


def test_full_guided_loop_float64_is_exact(fx, monkeypatch):
    """In float64 the sampler computes exactly the README's loop (same operations, same order)."""
    out, inputs = _sample_loop(fx, monkeypatch, torch.float64)
    want, want_inputs = reference_loop_float64(fx)
    assert len(inputs) == len(want_inputs) == 31
    for got, expected in zip(inputs, want_inputs):
        assert torch.equal(got, expected)
    assert out.dtype == torch.float64 and torch.equal(out, want)
    # The release's float32 loop is that same loop up to float32 rounding.
    close(want, fx["loop.x0"], LOOP_ATOL)


def test_full_guided_loop_through_sampler(fx, monkeypatch):
    """float32, against the release's stored loop (the README's float32 tolerance, see above)."""
    out, inputs = _sample_loop(fx, monkeypatch, torch.float32)
    close(inputs[0], fx["loop.x_T"])
    assert len(inputs) == 31
    close(torch.stack(inputs), fx["loop.model_inputs"], LOOP_ATOL)
    close(out, fx["loop.x0"], LOOP_ATOL)
