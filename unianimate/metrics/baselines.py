"""Two baselines measured beside the model, on the same held-out clips, by ``unianimate test``.

- ``copy reference``: the reference frame repeated for every frame, what a model that ignores the
  pose would score at best (the floor: a model that animates must beat it).
- ``autoencoder reconstruction of the ground truth``: the ground-truth frames through the VAE
  (encode, posterior sample, decode), the best a latent model can score (the ceiling).

Both go through the same :class:`unianimate.metrics.protocol.VideoMetrics` as the model (same
resolution, mode, LPIPS / I3D networks), so the rows are comparable.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from unianimate.batch import VideoBatch
from unianimate.metrics.protocol import VideoMetrics, _fmt

NAMES = {
    "copy_reference": "copy reference",
    "autoencoder": "autoencoder reconstruction of the ground truth",
}


def copy_reference(reference: Tensor, num_frames: int) -> Tensor:
    """reference b 3 H W -> the video b 3 f H W that repeats it (any value range)."""
    return reference.unsqueeze(2).expand(-1, -1, num_frames, -1, -1)


class BaselineMetrics:
    """One :class:`VideoMetrics` accumulator per baseline, sharing the model's metric networks.

    Args:
        model_metrics: the model's accumulator (its protocol and loaded networks are reused).
    """

    def __init__(self, model_metrics: VideoMetrics) -> None:
        self.metrics: dict[str, VideoMetrics] = {}
        for name in NAMES:
            metrics = copy.copy(model_metrics)  # same protocol and networks, nothing loaded twice
            metrics.reset()
            self.metrics[name] = metrics

    @torch.no_grad()
    def update(self, batch: VideoBatch, encoders: Any, seed: int = 0) -> None:
        """batch: ``video`` b 3 f H W and ``ref_image`` b 3 H W in [-1, 1]; ``encoders``: the frozen
        :class:`unianimate.models.frozen.FrozenEncoders` (its VAE makes the reconstruction)."""
        target = ((batch.video + 1) / 2).clamp(0, 1)
        reference = ((batch.ref_image + 1) / 2).clamp(0, 1)
        self.metrics["copy_reference"].update(copy_reference(reference, target.shape[2]), target)
        generator = torch.Generator(device=batch.video.device).manual_seed(seed)
        latents = encoders.encode_video(batch.video, generator)
        reconstruction = ((encoders.decode_video(latents) + 1) / 2).clamp(0, 1)
        self.metrics["autoencoder"].update(reconstruction, target)

    def snapshot(self) -> dict[str, dict]:
        return {name: metrics.snapshot() for name, metrics in self.metrics.items()}

    def merge(self, snapshots: list[dict[str, dict]]) -> None:
        """Every rank's :meth:`snapshot`, gathered: the results then cover all of them."""
        for name, metrics in self.metrics.items():
            metrics.merge([snap[name] for snap in snapshots])

    def compute(self) -> dict[str, dict]:
        return {name: metrics.compute() for name, metrics in self.metrics.items()}


def format_rows(model: dict, baselines: dict[str, dict]) -> str:
    """A Markdown table with one row for the model and one per baseline, provenance underneath."""
    order = ("l1", "psnr", "ssim", "lpips", "fvd", "pck")
    arrows = {"l1": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓", "fvd": "↓", "pck": "↑"}
    names = [k for k in order if k in model]
    rows = [("model", model)] + [(NAMES[name], results) for name, results in baselines.items()]
    lines = [
        "| | " + " | ".join(f"{k.upper()} {arrows[k]}" for k in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for label, results in rows:
        cells = [_fmt(k, float(results[k])) if k in results else "-" for k in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"mode: {model.get('mode', '?')}; videos: {model.get('num_videos', '?')}; "
        f"frames: {model.get('num_frames', '?')}; weights: {model.get('weights', '?')}",
    ]
    return "\n".join(lines) + "\n"
