"""Long videos from a model trained on short clips (SPEC §4): segments composed over one DDIM loop.

Every mode runs :func:`unianimate.diffusion.sampling.ddim_loop`; they differ only in what is
denoised and with which v-prediction:

- ``chain`` (the paper): segments of F frames; each next segment is first-frame conditioned on the
  last generated latent of the previous one (no decode/encode round trip);
- ``window`` (the release): one N-frame latent, v averaged over windows of F frames that overlap by
  ``overlap``, all denoised at every timestep;
- ``independent``: segments of F frames, each from its own noise with the same reference (the
  baseline the other two are measured against).

``chain`` and ``independent`` hold one segment's state plus the finished latents; ``window`` holds
the N-frame latent and one N-frame v-sum: time and memory are linear in N in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from unianimate.conditions import Conditions
from unianimate.diffusion.sampling import DDIMSampler, Denoiser, ddim_loop

LongVideoMode = Literal["chain", "window", "independent"]


@dataclass
class LongVideo:
    """How clips longer than one segment are generated (passed in like the sampler).

    Args:
        mode: ``chain``, ``window`` or ``independent`` (module docstring).
        segment_frames: F, the frames of one segment or window (the training clip length).
        overlap: frames shared by neighbouring windows (``window`` only).
    """

    mode: LongVideoMode = "chain"
    segment_frames: int = 16
    overlap: int = 8

    def __post_init__(self) -> None:
        if self.mode not in ("chain", "window", "independent"):
            raise ValueError(f"long_video.mode must be 'chain', 'window' or 'independent', got {self.mode!r}")
        if self.mode == "chain" and self.segment_frames < 2:
            raise ValueError(f"chain mode needs segment_frames >= 2, got {self.segment_frames}")
        if self.segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {self.segment_frames}")

    def spans(self, num_frames: int) -> list[tuple[int, int]]:
        """Frame spans [start, stop) of the segments or windows for N = num_frames."""
        if num_frames < 1:
            raise ValueError(f"a video needs at least 1 frame, got {num_frames}")
        f = self.segment_frames
        if self.mode == "chain":
            return chain_spans(num_frames, f)
        if self.mode == "window":
            return window_spans(num_frames, f, self.overlap)
        return [(s, min(s + f, num_frames)) for s in range(0, num_frames, f)]


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
        v_sum[:, :, start:stop] += sampler.guided_v(model, x_t[:, :, start:stop], t, cond.frames(start, stop))
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
    long_video: LongVideo | None = None,
    first_frame_latent: Tensor | None = None,
    prior_latent: Tensor | None = None,
    progress: bool = True,
) -> Tensor:
    """Latents (b, 4, N, h, w) for N = num_frames driving poses.

    cond.pose covers all N frames (b 3 N H W); the other conditions are per video and shared by
    every segment or window. latent_shape is (b, 4, h, w). ``first_frame_latent`` (b 4 h w)
    first-frame conditions segment 0 (``chain``), every segment (``independent``) or frame 0
    (``window``).
    """
    long_video = long_video or LongVideo()
    b, c, h, w = latent_shape
    if cond.pose is not None and cond.pose.shape[2] != num_frames:
        raise ValueError(f"cond.pose has {cond.pose.shape[2]} frames, expected num_frames={num_frames}")
    if sampler.noise_prior_t is not None and prior_latent is None:
        prior_latent = cond.ref_latent
    spans = long_video.spans(num_frames)

    if long_video.mode == "window":
        x_T = sampler.initial_latent((b, c, num_frames, h, w), generator, prior_latent)
        return ddim_loop(
            sampler,
            lambda x, t: window_v(model, sampler, x, t, cond, spans),
            x_T,
            first_frame_latent,
            progress,
            desc="DDIM (windows)",
        )

    pieces: list[Tensor] = []
    handed_over = first_frame_latent
    for start, stop in tqdm(spans, desc="segments", disable=not progress):
        x_T = sampler.initial_latent((b, c, stop - start, h, w), generator, prior_latent)
        seg_cond = cond.frames(start, stop)
        seg = ddim_loop(
            sampler, lambda x, t, seg_cond=seg_cond: sampler.guided_v(model, x, t, seg_cond), x_T, handed_over
        )
        if long_video.mode == "chain":
            pieces.append(seg if not pieces else seg[:, :, 1:])  # frame 0 is the previous last frame
            handed_over = seg[:, :, -1]
        else:
            pieces.append(seg)
    return torch.cat(pieces, dim=2)
