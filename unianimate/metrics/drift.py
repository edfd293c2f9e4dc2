"""Long-video measures against ground truth: drift per segment, seam jumps, colour drift.

A long video is made in spans (:meth:`unianimate.diffusion.long_video.LongVideo.spans`): chained
segments sharing one frame, independent segments, or overlapping windows. Every frame is counted
in the span that first produces it (:func:`new_frames`); a *seam* is the first frame of each such
part after the first. Videos are (b, c, f, H, W) tensors in any value range (the results are in
the same units); every function returns float64.
"""

from __future__ import annotations

import torch
from torch import Tensor


def new_frames(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The frames [start, stop) each span adds to those before it: chain segments lose the frame
    handed over, windows their overlap with the previous window; empty parts are left out."""
    parts, done = [], 0
    for start, stop in spans:
        if stop > max(start, done):
            parts.append((max(start, done), stop))
        done = max(done, stop)
    return parts


def seams(spans: list[tuple[int, int]]) -> list[int]:
    """Frame indices where a new span's frames begin (the first frame of every part but the first)."""
    return [start for start, _ in new_frames(spans)[1:]]


def blocks(num_frames: int, size: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) blocks of ``size`` frames (the last one may be shorter)."""
    return [(s, min(s + size, num_frames)) for s in range(0, num_frames, size)]


def frame_changes(video: Tensor) -> Tensor:
    """Mean absolute change from each frame to the next: (b, c, f, H, W) -> (b, f - 1)."""
    x = video.double()
    return (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 3, 4))


def seam_jump(video: Tensor, seam_frames: list[int]) -> tuple[float, float]:
    """(mean change into a seam frame from the frame before it, mean change between any other two
    neighbouring frames): the jump at segment boundaries against the motion inside segments."""
    changes = frame_changes(video)  # changes[:, t - 1]: frame t - 1 -> t
    at_seam = torch.zeros(changes.shape[1], dtype=torch.bool)
    at_seam[[t - 1 for t in seam_frames]] = True
    seam = changes[:, at_seam].mean() if at_seam.any() else torch.tensor(float("nan"))
    inside = changes[:, ~at_seam].mean() if (~at_seam).any() else torch.tensor(float("nan"))
    return float(seam), float(inside)


def figure_colour(video: Tensor, mask: Tensor) -> Tensor:
    """Mean colour of the masked (figure) pixels of every frame: video (b, c, f, H, W), mask
    (b, f, H, W) bool -> (b, f, c); NaN where a frame's mask is empty."""
    weight = mask.double().unsqueeze(1)
    total = (video.double() * weight).sum(dim=(3, 4))  # b c f
    count = weight.sum(dim=(3, 4))
    return (total / count).permute(0, 2, 1)


def colour_distance(colours: Tensor, reference: Tensor) -> Tensor:
    """Euclidean distance of per-frame colours (b, f, c) from the reference's colour (b, c) -> (b, f)."""
    return (colours.double() - reference.double().unsqueeze(1)).norm(dim=-1)


def part_means(values: Tensor, parts: list[tuple[int, int]]) -> list[float]:
    """Means of per-frame values (b, f) over all videos and the frames of each part [start, stop)."""
    return [float(values[:, start:stop].double().mean()) for start, stop in parts]
