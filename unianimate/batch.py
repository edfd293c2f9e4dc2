"""The batch every DataModule yields (training, evaluation, predict, latent cache).

Shapes use ``b`` batch, ``f`` frames and H x W the training size. A field is ``None`` where the
loader has nothing for it (no ground truth in predict, no pixels with the latent cache).

Pixels travel from the loader's workers as they are decoded and drawn (uint8) and become float
on the device in one place, :func:`datamodules.video_datamodule.to_float` (run by the
DataModules' ``on_after_batch_transfer``). As the LightningModule and the callbacks see it:

- ``pose``: float32 (b, 3, f, H, W) in [0, 1], the driving skeletons in the release's channel
  order; ``ref_pose``: (b, 3, H, W), the reference image's own skeleton;
- ``ref_image``: (b, 3, H, W) in [-1, 1]; ``video``: (b, 3, f, H, W) in [-1, 1], the ground truth;
- latent cache instead of pixels: ``latent`` (b, 4, f, h, w), ``ref_latent`` (b, 4, h, w) and
  ``clip_embed`` (b, d);
- ``keypoints``: (b, f, 20, 3) driving body keypoints in the clip's frame (pose-fidelity metrics);
- ``video_colour``: (b,) the colour code of 4:2:0 planes, consumed by ``to_float``;
- ``key``: the samples' keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor


@dataclass
class VideoBatch:
    pose: Tensor
    ref_pose: Tensor
    ref_image: Tensor | None = None
    video: Tensor | None = None
    latent: Tensor | None = None
    ref_latent: Tensor | None = None
    clip_embed: Tensor | None = None
    keypoints: Tensor | None = None
    video_colour: Tensor | None = None
    key: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.pose.shape[0]

    @property
    def num_frames(self) -> int:
        return self.pose.shape[-3]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.pose.shape[-2], self.pose.shape[-1]

    def to(self, device: torch.device | str) -> VideoBatch:
        return replace(
            self,
            **{f.name: v.to(device) for f in fields(self) if torch.is_tensor(v := getattr(self, f.name))},
        )

    def take(self, n: int) -> VideoBatch:
        """The first ``n`` samples."""
        return replace(
            self,
            **{f.name: getattr(self, f.name)[:n] for f in fields(self) if getattr(self, f.name) is not None},
        )

    @staticmethod
    def cat(batches: list[VideoBatch]) -> VideoBatch:
        """Samples of several batches in one (the same fields present in all)."""
        first = batches[0]
        values = {}
        for f in fields(first):
            parts = [getattr(b, f.name) for b in batches]
            if parts[0] is None:
                continue
            values[f.name] = (
                torch.cat(parts) if torch.is_tensor(parts[0]) else sum((list(p) for p in parts), [])
            )
        return VideoBatch(**values)
