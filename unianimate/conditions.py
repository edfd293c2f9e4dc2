"""The named conditions of one UniAnimate forward pass (SPEC §2, §3)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from unianimate.batch import VideoBatch

if TYPE_CHECKING:
    from unianimate.models.frozen import FrozenEncoders

# What the pixel local-image stream sees in training (at inference: always the reference image).
LocalImageSource = Literal["first_frame", "reference"]

# Names of the conditions that can be dropped per sample (SPEC §3, condition dropout).
DROPPABLE = ("pose", "clip", "local_image", "reference")


@dataclass
class Conditions:
    """Everything the denoiser is conditioned on, besides the noisy latent and the timestep.

    A field left ``None`` is absent for the whole batch (its features are zeros). ``drop`` marks
    single samples: ``drop["pose"]`` is a ``(b,)`` bool tensor, True where that sample's pose
    features are zeroed. Keys are the names in ``DROPPABLE``; ``"reference"`` covers the
    reference latent and the reference pose together (they form one guidance signal).
    """

    pose: Tensor | None = None  # b 3 f H W, driving skeleton pictures in [0, 1]
    ref_pose: Tensor | None = None  # b 3 H W, the reference image's own skeleton in [0, 1]
    ref_latent: Tensor | None = None  # b 4 h w, VAE latent of the reference image (x 0.18215)
    clip_embed: Tensor | None = None  # b d, pooled projected CLIP image embedding
    local_image: Tensor | None = None  # b 3 H W in [0, 1], the pixel image stream (release "local_image")
    drop: dict[str, Tensor] = field(default_factory=dict)

    # The fields with a frame axis (b c f H W): cut per segment or window of a long video.
    PER_FRAME = ("pose",)

    def frames(self, start: int, stop: int) -> Conditions:
        """The conditions of frames [start, stop) (per-video fields are shared)."""
        cut = {
            name: getattr(self, name)[:, :, start:stop]
            for name in self.PER_FRAME
            if getattr(self, name) is not None
        }
        return replace(self, **cut)

    def unconditional(self) -> Conditions:
        """Every condition removed: the unconditional pass of classifier-free guidance."""
        return Conditions()

    def with_drop(self, drop: dict[str, Tensor]) -> Conditions:
        unknown = set(drop) - set(DROPPABLE)
        if unknown:
            raise ValueError(f"unknown condition names {sorted(unknown)}; expected a subset of {DROPPABLE}")
        return replace(self, drop=dict(drop))


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


@torch.no_grad()
def build_conditions(
    batch: VideoBatch,
    encoders: FrozenEncoders,
    uses: frozenset[str],
    training: bool,
    local_image_training: LocalImageSource = "first_frame",
) -> tuple[Tensor | None, Conditions]:
    """The one place a batch becomes the denoiser's conditions: -> (clean latents, conditions).

    ``uses``: the condition names the denoiser declares (``UniAnimate.conditions``); only those
    are computed. ``training``: the clean latents b 4 f h w come from the ground-truth video (or
    the latent cache) and the local image stream sees the clip's first frame (the release's
    training, ``local_image_training="first_frame"``) or the reference image (``"reference"``: as
    at inference); at inference (``training=False``) there are no latents (``None``) and, as in the
    release, the local image stream sees the reference image.
    """
    cached = batch.latent is not None  # latent-cache batches: the encoders already ran offline
    latents = None
    if training:
        latents = batch.latent if cached else encoders.encode_video(batch.video)
    ref_latent = clip = None
    if "ref_latent" in uses:
        ref_latent = batch.ref_latent if cached else encoders.encode_images(batch.ref_image)
    if "clip_embed" in uses:
        clip = batch.clip_embed if cached else encoders.encode_clip(batch.ref_image)
    local_image = None
    if "local_image" in uses:
        first_frame = training and local_image_training == "first_frame"
        source = batch.video[:, :, 0] if first_frame else batch.ref_image
        if source is None:
            raise ValueError(
                "the local image stream needs decoded frames: train it from pixel shards or from a "
                "latent cache built with frames (tools/cache_latents.py --frames)"
            )
        local_image = to_unit(source)
    cond = Conditions(
        pose=batch.pose,
        ref_pose=batch.ref_pose if "ref_pose" in uses else None,
        ref_latent=ref_latent,
        clip_embed=clip,
        local_image=local_image,
    )
    return latents, cond
