"""The named conditions of one UniAnimate forward pass (SPEC §2, §3)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import Tensor

# Names of the conditions that can be dropped per sample (SPEC §3, condition dropout).
DROPPABLE = ("pose", "clip", "first_frame", "reference")


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
    first_frame: Tensor | None = None  # b 3 H W, pixel first-frame stream in [0, 1]
    drop: dict[str, Tensor] = field(default_factory=dict)

    def unconditional(self) -> Conditions:
        """Every condition removed: the unconditional pass of classifier-free guidance."""
        return Conditions()

    def with_drop(self, drop: dict[str, Tensor]) -> Conditions:
        unknown = set(drop) - set(DROPPABLE)
        if unknown:
            raise ValueError(f"unknown condition names {sorted(unknown)}; expected a subset of {DROPPABLE}")
        return replace(self, drop=dict(drop))

    def batch_slice(self, index: slice) -> Conditions:
        """The same conditions for a slice of the batch."""

        def cut(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[index]

        return Conditions(
            pose=cut(self.pose),
            ref_pose=cut(self.ref_pose),
            ref_latent=cut(self.ref_latent),
            clip_embed=cut(self.clip_embed),
            first_frame=cut(self.first_frame),
            drop={k: v[index] for k, v in self.drop.items()},
        )
