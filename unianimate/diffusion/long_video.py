"""Long videos from a model trained on short clips (SPEC §4): segment chaining or sliding windows.

Both modes cost time and memory linear in the number of frames N: `chain` holds one segment's
state plus the finished latents; `window` holds the N-frame latent and one N-frame v-sum.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from unianimate.conditions import Conditions
from unianimate.diffusion.sampling import DDIMSampler, Denoiser, replace_first_frame


def frame_slice(cond: Conditions, start: int, stop: int) -> Conditions:
    """The conditions of frames [start, stop): only the pose (b 3 N H W) has a frame axis."""
    return replace(cond, pose=None if cond.pose is None else cond.pose[:, :, start:stop])


def chain_spans(num_frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """Frame spans [start, stop) of the chained segments.

    Segment k covers [k (F-1), k (F-1) + F): its frame 0 IS the last frame of segment k-1 (handed
    over as a clean latent). The last segment is cut short so that exactly N frames come out; it
    always has at least 2 frames (the handed-over one and one new).
    """
    if segment_frames < 2:
        raise ValueError(f"chain mode needs segment_frames >= 2, got {segment_frames}")
    if num_frames <= segment_frames:
        return [(0, num_frames)]
    step = segment_frames - 1
    return [(s, min(s + segment_frames, num_frames)) for s in range(0, num_frames - 1, step)]


def window_spans(num_frames: int, window_frames: int, overlap: int) -> list[tuple[int, int]]:
    """Frame spans [start, stop) of the sliding windows: stride F - overlap, the last one shifted
    back to end exactly at frame N (so it may overlap its neighbour by more than `overlap`)."""
    if num_frames <= window_frames:
        return [(0, num_frames)]
    if not 0 <= overlap < window_frames:
        raise ValueError(f"need 0 <= overlap < window frames, got overlap={overlap}, F={window_frames}")
    stride = window_frames - overlap
    starts = list(range(0, num_frames - window_frames, stride)) + [num_frames - window_frames]
    return [(s, s + window_frames) for s in starts]


def window_v(
    model: Denoiser,
    sampler: DDIMSampler,
    x_t: Tensor,
    t: int,
    cond: Conditions,
    spans: list[tuple[int, int]],
) -> Tensor:
    """Guided v-predictions of every window over x_t (b 4 N h w), averaged where windows overlap."""
    v_sum = torch.zeros_like(x_t)
    count = torch.zeros(x_t.shape[2], dtype=x_t.dtype, device=x_t.device)
    for start, stop in spans:
        v_sum[:, :, start:stop] += sampler.guided_v(
            model, x_t[:, :, start:stop], t, frame_slice(cond, start, stop)
        )
        count[start:stop] += 1
    return v_sum / count.view(1, 1, -1, 1, 1)


@torch.no_grad()
def generate_long_video(
    model: Denoiser,
    cond: Conditions,
    num_frames: int,
    sampler: DDIMSampler,
    latent_shape: tuple[int, int, int, int],
    generator: torch.Generator,
    mode: Literal["chain", "window"] = "chain",
    segment_frames: int = 16,
    overlap: int = 8,
    first_frame_latent: Tensor | None = None,
    prior_latent: Tensor | None = None,
    progress: bool = True,
) -> Tensor:
    """Latents (b, 4, N, h, w) for N = num_frames driving poses.

    cond.pose covers all N frames (b 3 N H W); the other conditions are per video and shared by
    every segment or window. latent_shape is (b, 4, h, w).

    - "chain" (the paper): segments of F = segment_frames frames (spans in `chain_spans`); each
      next segment is first-frame conditioned on the last generated latent of the previous one
      (no decode/encode round trip). Segment 0 uses first_frame_latent if given.
    - "window" (the release): windows of F frames overlapping by `overlap`, all denoised at every
      timestep; their v-predictions are averaged where they overlap (`window_spans`).
    """
    b, c, h, w = latent_shape
    if cond.pose is not None and cond.pose.shape[2] != num_frames:
        raise ValueError(f"cond.pose has {cond.pose.shape[2]} frames, expected num_frames={num_frames}")
    if sampler.noise_prior_t is not None and prior_latent is None:
        prior_latent = cond.ref_latent

    if mode == "chain":
        pieces: list[Tensor] = []
        handed_over = first_frame_latent
        for start, stop in tqdm(
            chain_spans(num_frames, segment_frames), desc="segments", disable=not progress
        ):
            x_T = sampler.initial_latent((b, c, stop - start, h, w), generator, prior_latent)
            seg = sampler.denoise(model, x_T, frame_slice(cond, start, stop), handed_over)
            pieces.append(seg if not pieces else seg[:, :, 1:])  # frame 0 is the previous last frame
            handed_over = seg[:, :, -1]
        return torch.cat(pieces, dim=2)

    if mode == "window":
        spans = window_spans(num_frames, segment_frames, overlap)
        x = sampler.initial_latent((b, c, num_frames, h, w), generator, prior_latent)
        for t in tqdm(sampler.timesteps, desc="DDIM (windows)", disable=not progress):
            x = replace_first_frame(x, first_frame_latent)
            x = sampler.step(window_v(model, sampler, x, t, cond, spans), t, x)
        return replace_first_frame(x, first_frame_latent)

    raise ValueError(f"mode must be 'chain' or 'window', got {mode!r}")
