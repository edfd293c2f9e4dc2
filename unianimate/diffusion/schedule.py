"""Noise schedule of UniAnimate (SPEC §3): diffusers schedulers with the release's float64 tables.

Schedule: 1000 steps, "scaled linear" betas 0.00085 -> 0.012, rescaled to zero terminal SNR,
v-prediction. `shared/fixtures/official_unianimate/diffusion.safetensors` pins every number.

Precision (fixture README §5): the release keeps its tables in float64 and rounds each
coefficient (sqrt(abar), sqrt(1 - abar), ...) to float32 just before multiplying. diffusers
builds the same tables in float32 (betas up to 7e-6 off, x_t up to 2.5e-6 off), so the
schedulers made here get float64 tables computed by diffusers' own `rescale_zero_terminal_snr`.
"""

from __future__ import annotations

from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
from torch import Tensor

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
# What training and sampling share beyond the betas' range: one definition, so they cannot drift.
_SCHEDULE = dict(
    beta_schedule="scaled_linear",
    rescale_betas_zero_snr=True,
    prediction_type="v_prediction",
    clip_sample=False,
)


def _use_float64_tables(scheduler: DDPMScheduler | DDIMScheduler, beta_start: float, beta_end: float) -> None:
    """Replace the scheduler's float32 tables by the release's float64 ones (same formulas)."""
    n = scheduler.config.num_train_timesteps
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    betas = rescale_zero_terminal_snr(betas)
    scheduler.betas = betas
    scheduler.alphas = 1.0 - betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, dim=0)
    if isinstance(scheduler, DDIMScheduler):
        # set_alpha_to_one=False: the step after the last timestep lands on abar[0] (README §5).
        scheduler.final_alpha_cumprod = scheduler.alphas_cumprod[0]


def make_train_scheduler(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START, beta_end: float = BETA_END
) -> DDPMScheduler:
    """The training schedule (SPEC §3): scaled-linear betas, zero terminal SNR, v-prediction."""
    scheduler = DDPMScheduler(
        num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end, **_SCHEDULE
    )
    _use_float64_tables(scheduler, beta_start, beta_end)
    return scheduler


def release_timesteps(num_steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """The release's DDIM timesteps, descending: 1 + {0, s, 2s, ...} below 1000 with s = 1000 // n.

    31 values [991, 958, ..., 34, 1] for 30 steps because 1000 is not a multiple of 30.
    """
    stride = num_train_timesteps // num_steps
    steps = [min(max(1 + k, 0), num_train_timesteps - 1) for k in range(0, num_train_timesteps, stride)]
    return steps[::-1]


def make_sampling_scheduler(
    num_steps: int = 30, spacing: Literal["release", "trailing"] = "release"
) -> DDIMScheduler:
    """DDIM scheduler for sampling (SPEC §4), timesteps already set.

    "release": diffusers' leading spacing with steps_offset 1, but with the release's timestep list
    (diffusers' own 30-step list lacks the first step 991). "trailing": diffusers' trailing list.
    """
    scheduler = DDIMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_start=BETA_START,
        beta_end=BETA_END,
        **_SCHEDULE,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading" if spacing == "release" else "trailing",
    )
    _use_float64_tables(scheduler, BETA_START, BETA_END)
    scheduler.set_timesteps(num_steps)
    if spacing == "release":
        scheduler.timesteps = torch.tensor(release_timesteps(num_steps), dtype=torch.int64)
    elif spacing != "trailing":
        raise ValueError(f"spacing must be 'release' or 'trailing', got {spacing!r}")
    return scheduler


def previous_timestep(scheduler: DDIMScheduler, t: int) -> int:
    """Where one DDIM step from t lands: t - stride as in diffusers' DDIMScheduler.step, floored at 0.

    diffusers uses final_alpha_cumprod below 0, which is abar[0] with set_alpha_to_one=False, so
    flooring at 0 is the same thing and matches the release's max(t - 33, 0).
    """
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return max(t - stride, 0)


def _coef(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """A float64 per-sample coefficient rounded to like's dtype, shaped (b, 1, ..., 1) to broadcast."""
    c = table.to(t.device)[t].to(device=like.device, dtype=like.dtype)
    return c.reshape(-1, *([1] * (like.ndim - 1)))


# diffusers' add_noise / get_velocity cast the table to the sample dtype *before* the square root,
# which is 1.2e-6 off the release; these apply the release's rounding (sqrt in float64, then round).
def add_noise(scheduler: DDPMScheduler | DDIMScheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """q_sample: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. x0, noise: b c f h w; t: (b,) int64."""
    abar = scheduler.alphas_cumprod
    return _coef(abar.sqrt(), t, x0) * x0 + _coef((1 - abar).sqrt(), t, x0) * noise


def v_target(scheduler: DDPMScheduler | DDIMScheduler, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """The v-prediction target: sqrt(abar_t) noise - sqrt(1 - abar_t) x0. Shapes as add_noise."""
    abar = scheduler.alphas_cumprod
    return _coef(abar.sqrt(), t, x0) * noise - _coef((1 - abar).sqrt(), t, x0) * x0


def x0_from_v(scheduler: DDPMScheduler | DDIMScheduler, x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """The clean latent implied by a v-prediction: sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    abar = scheduler.alphas_cumprod
    return _coef(abar.sqrt(), t, x_t) * x_t - _coef((1 - abar).sqrt(), t, x_t) * v
