"""The training objective of SPEC §3 with the unified noise input.

v-prediction on a zero-terminal-SNR scaled-linear schedule, offset noise, uniform timesteps
(or only the few a few-step sampler visits, ``timesteps``), plain MSE over (c, f, h, w) per
sample. With probability ``p_first_frame`` a sample is *first-frame conditioned* (the paper's
unified noise input): the noisy latent of frame 0 is replaced by its clean latent (optionally
lightly noise-augmented) and frame 0 leaves the loss.
The timestep stays one per sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from unianimate.conditions import Conditions
from unianimate.diffusion.noise import offset_noise
from unianimate.diffusion.schedule import add_noise, make_train_scheduler, v_target

Denoiser = Callable[[Tensor, Tensor, Conditions], Tensor]


@dataclass
class ObjectiveOutput:
    loss: Tensor  # scalar, mean over the batch
    loss_per_sample: Tensor  # b
    timesteps: Tensor  # b
    first_frame: Tensor  # b bool, which samples were first-frame conditioned
    model_input: Tensor  # b c f h w, the noisy latent the model saw


class DiffusionObjective:
    """Loss of one batch of clean latents under the unified noise input.

    Args:
        num_train_timesteps: diffusion steps (1000).
        offset_noise_strength: weight of the per-frame, per-channel offset (0.1).
        p_first_frame: probability that a sample is first-frame conditioned.
        first_frame_noise: std of the light Gaussian augmentation of the clean frame-0 latent.
        timesteps: train only at these timesteps, drawn uniformly from the list, so one listed
            twice is drawn twice as often (default: all of 0 ... num_train_timesteps - 1). For a
            few-step sampler, its own timesteps: a short run then spends every step where sampling
            asks (the demo: 2 trailing DDIM steps, [999, 499, 499]). Sampling at other timesteps
            then meets an untrained model, so the module warns when its sampler does
            (:meth:`untrained`).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        offset_noise_strength: float = 0.1,
        p_first_frame: float = 0.5,
        first_frame_noise: float = 0.0,
        timesteps: list[int] | None = None,
    ) -> None:
        if not 0.0 <= p_first_frame <= 1.0:
            raise ValueError(f"p_first_frame must be a probability, got {p_first_frame}")
        self.scheduler = make_train_scheduler(num_train_timesteps)
        self.num_train_timesteps = num_train_timesteps
        self.offset_noise_strength = offset_noise_strength
        self.p_first_frame = p_first_frame
        self.first_frame_noise = first_frame_noise
        if timesteps is not None and (
            not timesteps or not all(0 <= int(t) < num_train_timesteps for t in timesteps)
        ):
            raise ValueError(
                f"timesteps must be a non-empty list in [0, {num_train_timesteps}), got {timesteps}"
            )
        self.timesteps = None if timesteps is None else torch.tensor(timesteps, dtype=torch.int64)

    def untrained(self, timesteps: list[int]) -> list[int]:
        """Those of ``timesteps`` (a sampler's) this objective never trains at."""
        if self.timesteps is None:
            return []
        trained = set(self.timesteps.tolist())
        return [t for t in timesteps if t not in trained]

    def draw(
        self, latents: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Random timesteps (b,), noise (b c f h w) and first-frame flags (b,) for one batch."""
        b, device = latents.shape[0], latents.device
        if self.timesteps is None:
            t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator, device=device)
        else:
            pick = torch.randint(0, len(self.timesteps), (b,), generator=generator, device=device)
            t = self.timesteps.to(device)[pick]
        noise = offset_noise(
            tuple(latents.shape), self.offset_noise_strength, generator, device, latents.dtype
        )
        first = torch.rand(b, generator=generator, device=device) < self.p_first_frame
        if latents.shape[2] < 2:
            first = torch.zeros_like(first)  # a 1-frame clip has nothing left to predict
        return t, noise, first

    def __call__(
        self,
        model: Denoiser,
        latents: Tensor,
        cond: Conditions,
        t: Tensor,
        noise: Tensor,
        first_frame: Tensor,
        generator: torch.Generator | None = None,
    ) -> ObjectiveOutput:
        """Latents b c f h w (clean, scaled) -> the v-prediction MSE."""
        noisy = add_noise(self.scheduler, latents, noise, t)
        target = v_target(self.scheduler, latents, noise, t)
        if first_frame.any():
            clean0 = latents[:, :, :1]
            if self.first_frame_noise > 0:
                aug = torch.randn(clean0.shape, generator=generator, device=clean0.device, dtype=clean0.dtype)
                clean0 = clean0 + self.first_frame_noise * aug
            replace = first_frame.view(-1, 1, 1, 1, 1)
            noisy = torch.cat([torch.where(replace, clean0, noisy[:, :, :1]), noisy[:, :, 1:]], dim=2)
        pred = model(noisy, t, cond)
        err = (pred.float() - target.float()) ** 2  # b c f h w
        # Frame 0 of a first-frame conditioned sample is given, not predicted: it leaves the loss.
        weight = torch.ones(err.shape[0], 1, err.shape[2], 1, 1, device=err.device)
        weight[:, :, 0] = (~first_frame).float().view(-1, 1, 1, 1)
        per_sample = (err * weight).sum(dim=(1, 2, 3, 4)) / (
            weight.sum(dim=(1, 2, 3, 4)) * err.shape[1] * err.shape[3] * err.shape[4]
        )
        return ObjectiveOutput(per_sample.mean(), per_sample, t, first_frame, noisy)
