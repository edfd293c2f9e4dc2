"""DDIM sampling (SPEC §4): eta 0, classifier-free guidance, noise prior, first-frame conditioning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from diffusers import DDIMScheduler
from einops import repeat
from torch import Tensor
from tqdm.auto import tqdm

from unianimate.conditions import Conditions
from unianimate.diffusion.noise import offset_noise
from unianimate.diffusion.schedule import add_noise, make_sampling_scheduler, previous_timestep

# model(x_t: b 4 f h w, t: (b,) int64, cond) -> v-prediction b 4 f h w
Denoiser = Callable[[Tensor, Tensor, Conditions], Tensor]


def ddim_step(scheduler: DDIMScheduler, v: Tensor, t: int, x_t: Tensor) -> tuple[Tensor, Tensor]:
    """One deterministic (eta 0) DDIM step from timestep t with a v-prediction -> (x0_pred, x_prev).

    Why not `DDIMScheduler.step`: it lands on the same abar_prev, but derives epsilon as
    sqrt(abar) v + sqrt(1 - abar) x_t, which rounds differently from the release's
    (sqrt(1/abar) x_t - x0) / sqrt(1/abar - 1): 1.0e-6 off a single release step at t = 1 and
    1.5e-6 over the 31-step loop. This is the release's formula and rounding (fixture README §5):
    coefficients from the float64 table rounded to float32; abar_prev rounded first, then rooted.
    """
    abar = scheduler.alphas_cumprod
    a_t = abar[t]
    a_prev = abar[previous_timestep(scheduler, t)].to(x_t.dtype)

    def f(c: Tensor) -> float:  # a float64 coefficient rounded to the sample dtype
        return float(c.to(x_t.dtype))

    x0 = f(a_t.sqrt()) * x_t - f((1 - a_t).sqrt()) * v
    if a_t > 0:
        eps = (f((1 / a_t).sqrt()) * x_t - x0) / f((1 / a_t - 1).sqrt())
    else:  # abar = 0 (t = 999 with zero terminal SNR, trailing spacing): x_t is pure noise
        eps = x_t
    x_prev = float(a_prev.sqrt()) * x0 + float((1 - a_prev).sqrt()) * eps
    return x0, x_prev


def replace_first_frame(x: Tensor, first_frame_latent: Tensor | None) -> Tensor:
    """Frame 0 of x (b c f h w) replaced by a clean latent (b c h w): the unified noise input."""
    if first_frame_latent is None:
        return x
    return torch.cat([first_frame_latent.to(x.dtype)[:, :, None], x[:, :, 1:]], dim=2)


# v_fn(x_t: b 4 f h w, t) -> v-prediction b 4 f h w (guided, windowed, ...)
VFunction = Callable[[Tensor, int], Tensor]


def ddim_loop(
    sampler: DDIMSampler,
    v_fn: VFunction,
    x_T: Tensor,
    first_frame_latent: Tensor | None = None,
    progress: bool = False,
    desc: str = "DDIM",
) -> Tensor:
    """The one DDIM loop: every timestep of ``sampler`` from x_T (b 4 f h w) -> clean latents.

    ``v_fn`` gives the v-prediction at (x_t, t): long-video modes compose over this loop by what
    they pass. With first_frame_latent (b 4 h w), frame 0 is the clean latent before every call
    and in the output (the paper's first-frame conditioned noise input).
    """
    x = x_T
    for t in tqdm(sampler.timesteps, desc=desc, disable=not progress, leave=False):
        x = replace_first_frame(x, first_frame_latent)
        x = sampler.step(v_fn(x, t), t, x)
    return replace_first_frame(x, first_frame_latent)


class DDIMSampler:
    """Guided DDIM sampler. The defaults reproduce the release's 31-step loop (SPEC §4).

    Args:
        num_steps: DDIM steps ("release" spacing gives 31 timesteps for 30).
        spacing: "release" (991, 958, ..., 1) or diffusers' "trailing" (999, 966, ..., 32).
        guidance_scale: classifier-free guidance; 1.0 skips the unconditional pass.
        noise_prior_t: if set, x_T is the prior latent (default: the reference latent) diffused to
            this timestep instead of pure noise (the release: 949, while sampling starts at 991).
        offset_noise_strength: strength of the per-frame, per-channel offset in the initial noise.
    """

    def __init__(
        self,
        num_steps: int = 30,
        spacing: Literal["release", "trailing"] = "release",
        guidance_scale: float = 2.5,
        noise_prior_t: int | None = None,
        offset_noise_strength: float = 0.1,
    ) -> None:
        self.scheduler = make_sampling_scheduler(num_steps, spacing)
        self.guidance_scale = guidance_scale
        self.noise_prior_t = noise_prior_t
        self.offset_noise_strength = offset_noise_strength

    @property
    def timesteps(self) -> list[int]:
        return self.scheduler.timesteps.tolist()

    def initial_latent(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator,
        prior_latent: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """x_T of shape (b, 4, f, h, w): offset noise, or the noise prior if noise_prior_t is set."""
        noise = offset_noise(tuple(shape), self.offset_noise_strength, generator, generator.device, dtype)
        if self.noise_prior_t is None:
            if prior_latent is not None:
                raise ValueError("prior_latent was given but noise_prior_t is None")
            return noise
        if prior_latent is None:
            raise ValueError("noise_prior_t is set: pass prior_latent (b, 4, h, w) or cond.ref_latent")
        prior = repeat(prior_latent.to(noise), "b c h w -> b c f h w", f=shape[2])
        t = torch.full((shape[0],), self.noise_prior_t, dtype=torch.int64, device=noise.device)
        return add_noise(self.scheduler, prior, noise, t)

    def guided_v(self, model: Denoiser, x_t: Tensor, t: int, cond: Conditions) -> Tensor:
        """v = v_u + s (v_c - v_u); the unconditional pass drops every condition at once (SPEC §4)."""
        tt = torch.full((x_t.shape[0],), t, dtype=torch.int64, device=x_t.device)
        v = model(x_t, tt, cond)
        if self.guidance_scale == 1.0:
            return v
        v_uncond = model(x_t, tt, cond.unconditional())
        return v_uncond + self.guidance_scale * (v - v_uncond)

    def step(self, v: Tensor, t: int, x_t: Tensor) -> Tensor:
        return ddim_step(self.scheduler, v, t, x_t)[1]

    def denoise(
        self,
        model: Denoiser,
        x_T: Tensor,
        cond: Conditions,
        first_frame_latent: Tensor | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Guided DDIM from x_T (b 4 f h w) -> clean latents (b 4 f h w); see :func:`ddim_loop`."""
        return ddim_loop(
            self, lambda x, t: self.guided_v(model, x, t, cond), x_T, first_frame_latent, progress
        )

    @torch.no_grad()
    def sample(
        self,
        model: Denoiser,
        cond: Conditions,
        shape: tuple[int, ...],
        generator: torch.Generator,
        first_frame_latent: Tensor | None = None,
        prior_latent: Tensor | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Latents (b, 4, f, h, w) of shape `shape`; deterministic given the generator's state.

        The noise prior uses prior_latent, or cond.ref_latent when prior_latent is None.
        """
        if self.noise_prior_t is not None and prior_latent is None:
            prior_latent = cond.ref_latent
        x_T = self.initial_latent(shape, generator, prior_latent)
        return self.denoise(model, x_T, cond, first_frame_latent, progress)
