"""Per-sample condition dropout (SPEC §3): for classifier-free guidance and robustness."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unianimate.conditions import DROPPABLE

# Dropout name -> the ``Conditions`` field it zeroes ("reference" covers ref_latent and ref_pose).
DROPPED_FIELD = {
    "pose": "pose",
    "clip": "clip_embed",
    "local_image": "local_image",
    "reference": "ref_latent",
}


@dataclass
class ConditionDropout:
    """Probabilities of dropping each condition, independently per sample.

    A fraction ``p_all_drop`` of samples drops every condition (the unconditional branch of
    guidance), a fraction ``p_all_keep`` keeps every condition; the rest draw each condition
    independently with its own probability.
    """

    p_pose: float = 0.5
    p_clip: float = 0.5
    p_local_image: float = 0.5
    p_reference: float = 0.1
    p_all_drop: float = 0.1
    p_all_keep: float = 0.1

    def __post_init__(self) -> None:
        for name, p in vars(self).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"ConditionDropout.{name} must be a probability, got {p}")
        if self.p_all_drop + self.p_all_keep > 1.0:
            raise ValueError("p_all_drop + p_all_keep must not exceed 1")

    def probabilities(self) -> dict[str, float]:
        return {
            "pose": self.p_pose,
            "clip": self.p_clip,
            "local_image": self.p_local_image,
            "reference": self.p_reference,
        }

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None, device=None
    ) -> dict[str, Tensor]:
        """``{name: (b,) bool}``, True where the sample's condition is dropped."""
        group = torch.rand(batch_size, generator=generator, device=device)
        all_drop = group < self.p_all_drop
        all_keep = (group >= self.p_all_drop) & (group < self.p_all_drop + self.p_all_keep)
        drop = {}
        for name in DROPPABLE:
            independent = (
                torch.rand(batch_size, generator=generator, device=device) < self.probabilities()[name]
            )
            drop[name] = (independent | all_drop) & ~all_keep
        return drop
