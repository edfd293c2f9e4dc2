"""Side-by-side comparison videos: reference | pose | generated | ground truth (SPEC §7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from unianimate.video_io import encode_mp4


def to_uint8_frames(video: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Video 3 f H W (float, in ``value_range``) -> uint8 f H W 3."""
    lo, hi = value_range
    x = ((video.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    return (rearrange(x, "c f h w -> f h w c") * 255).round().to(torch.uint8).numpy()


def comparison_frames(
    reference: Tensor, pose: Tensor, generated: Tensor, target: Tensor | None = None
) -> np.ndarray:
    """One sample's panels side by side: uint8 f H (k*W) 3.

    reference 3 H W in [-1, 1]; pose 3 f H W in [0, 1] (release channel order, flipped back to RGB
    for display); generated and target 3 f H W in [-1, 1].
    """
    f = generated.shape[1]
    panels = [
        to_uint8_frames(reference.unsqueeze(1).expand(-1, f, -1, -1)),
        to_uint8_frames(pose.flip(0), (0.0, 1.0)),
        to_uint8_frames(generated),
    ]
    if target is not None:
        panels.append(to_uint8_frames(target[:, :f]))
    return np.concatenate(panels, axis=2)


def write_comparison_mp4(path: str | Path, rows: list[np.ndarray], fps: float = 8.0) -> Path:
    """Stack per-sample comparison rows vertically and write an mp4 (sizes padded to even)."""
    frames = np.concatenate(rows, axis=1)
    f, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    tmp.write_bytes(encode_mp4(frames, fps))
    tmp.replace(path)  # atomic: a crash never leaves a half-written video under the final name
    return path
