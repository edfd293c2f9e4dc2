"""Long video generation: chain hand-over and window averaging (SPEC §4)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import tiny_unianimate
from torch import Tensor, nn

from unianimate.conditions import Conditions
from unianimate.diffusion.long_video import (
    LongVideo,
    chain_spans,
    generate_long_video,
    window_spans,
    window_v,
)
from unianimate.diffusion.sampling import DDIMSampler

B, H, W = 1, 2, 2  # latent size; pixels are 8x larger


def frame_index_pose(n: int) -> Tensor:
    """Pose pictures whose every pixel holds the frame's index: a model can read its position."""
    return torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1).expand(B, 3, n, 8 * H, 8 * W).clone()


class Recorder(nn.Module):
    """Stand-in denoiser that records frame 0 of x_t and the frame indices of the pose it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.frame0: list[Tensor] = []
        self.frames: list[list[int]] = []

    def forward(self, x: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        if cond.pose is None:  # unconditional pass
            return 0.25 * x
        self.frame0.append(x[:, :, 0].clone())
        self.frames.append(cond.pose[0, 0, :, 0, 0].long().tolist())
        return 0.5 * x + 0.01 * cond.pose[:, :1, :, :1, :1]


class WindowStart(nn.Module):
    """v = the first frame index of the window it is shown, everywhere in that window."""

    def forward(self, x: Tensor, t: Tensor, cond: Conditions) -> Tensor:
        return torch.zeros_like(x) + cond.pose[:, :1, :1, :1, :1]


def test_spans():
    assert chain_spans(10, 4) == [(0, 4), (3, 7), (6, 10)]
    assert chain_spans(9, 4) == [(0, 4), (3, 7), (6, 9)]  # last segment cut short
    assert chain_spans(3, 16) == [(0, 3)]
    assert window_spans(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_spans(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]  # last window shifted to the end
    assert window_spans(4, 16, 8) == [(0, 4)]
    with pytest.raises(ValueError):
        window_spans(20, 4, 4)


def test_chain_hands_over_last_latent():
    n, seg = 10, 4  # three segments: [0, 4), [3, 7), [6, 10)
    sampler = DDIMSampler(num_steps=3, guidance_scale=2.5)
    steps = len(sampler.timesteps)
    model = Recorder()
    cond = Conditions(pose=frame_index_pose(n))
    out = generate_long_video(
        model,
        cond,
        n,
        sampler,
        (B, 4, H, W),
        torch.Generator().manual_seed(0),
        LongVideo(segment_frames=seg),
        progress=False,
    )
    assert out.shape == (B, 4, n, H, W)
    assert len(model.frames) == 3 * steps
    for k, (start, stop) in enumerate(chain_spans(n, seg)):
        calls = range(k * steps, (k + 1) * steps)
        assert all(model.frames[i] == list(range(start, stop)) for i in calls)
        if k == 0:  # no first frame given: segment 0 is a random-noise input
            assert not torch.equal(model.frame0[0], model.frame0[1])
        else:  # frame 0 of every step is the previous segment's last generated latent
            assert all(torch.equal(model.frame0[i], out[:, :, start]) for i in calls)


def test_chain_uneven_length_and_given_first_frame():
    n, seg = 9, 4
    sampler = DDIMSampler(num_steps=2, guidance_scale=1.0)
    model = Recorder()
    first = torch.randn(B, 4, H, W)
    out = generate_long_video(
        model,
        Conditions(pose=frame_index_pose(n)),
        n,
        sampler,
        (B, 4, H, W),
        torch.Generator().manual_seed(0),
        LongVideo(segment_frames=seg),
        first_frame_latent=first,
        progress=False,
    )
    assert out.shape[2] == n
    assert [len(f) for f in model.frames[:: len(sampler.timesteps)]] == [4, 4, 3]
    assert torch.equal(out[:, :, 0], first)
    assert all(torch.equal(f, first) for f in model.frame0[: len(sampler.timesteps)])


@pytest.mark.parametrize(
    "n, expected",
    [(10, [0, 0, 1, 1, 3, 3, 5, 5, 6, 6]), (9, [0, 0, 1, 1, 3, 11 / 3, 4.5, 4.5, 5])],
)
def test_window_v_averages_overlaps(n, expected):
    sampler = DDIMSampler(num_steps=2, guidance_scale=1.0)
    x = torch.randn(B, 4, n, H, W)
    v = window_v(WindowStart(), sampler, x, 500, Conditions(pose=frame_index_pose(n)), window_spans(n, 4, 2))
    want = torch.tensor(expected, dtype=torch.float32).view(1, 1, n, 1, 1).expand_as(v)
    assert torch.allclose(v, want, atol=1e-6)


def test_window_mode_end_to_end():
    n = 9
    sampler = DDIMSampler(num_steps=2)
    first = torch.randn(B, 4, H, W)
    kwargs = dict(long_video=LongVideo("window", 4, 2), first_frame_latent=first, progress=False)
    cond = Conditions(pose=frame_index_pose(n))
    a = generate_long_video(
        Recorder(), cond, n, sampler, (B, 4, H, W), torch.Generator().manual_seed(0), **kwargs
    )
    b = generate_long_video(
        Recorder(), cond, n, sampler, (B, 4, H, W), torch.Generator().manual_seed(0), **kwargs
    )
    assert a.shape == (B, 4, n, H, W) and torch.equal(a, b)
    assert torch.equal(a[:, :, 0], first)

    # one shared timestep schedule: the N-frame state takes one step per timestep from the averaged v
    x = sampler.initial_latent((B, 4, n, H, W), torch.Generator().manual_seed(0))
    model, spans = Recorder(), window_spans(n, 4, 2)
    for t in sampler.timesteps:
        x = torch.cat([first[:, :, None], x[:, :, 1:]], dim=2)
        x = sampler.step(window_v(model, sampler, x, t, cond, spans), t, x)
    assert torch.equal(a[:, :, 1:], x[:, :, 1:])


def test_real_tiny_model_chain():
    model = tiny_unianimate()
    n, seg = 10, 4
    g = torch.Generator().manual_seed(1)
    cond = Conditions(
        pose=torch.rand(B, 3, n, 8 * H, 8 * W, generator=g),
        ref_pose=torch.rand(B, 3, 8 * H, 8 * W, generator=g),
        ref_latent=torch.randn(B, 4, H, W, generator=g),
    )
    seen: list[Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, :, 0].clone()))
    sampler = DDIMSampler(num_steps=2, guidance_scale=1.0)
    out = generate_long_video(
        model,
        cond,
        n,
        sampler,
        (B, 4, H, W),
        torch.Generator().manual_seed(0),
        LongVideo(segment_frames=seg),
        progress=False,
    )
    assert out.shape == (B, 4, n, H, W) and torch.isfinite(out).all()
    steps = len(sampler.timesteps)
    for k, (start, _) in enumerate(chain_spans(n, seg)[1:], start=1):
        assert all(torch.equal(s, out[:, :, start]) for s in seen[k * steps : (k + 1) * steps])


def test_independent_segments_share_no_state():
    """`independent`: non-overlapping segments, each from its own noise, none handed over; the
    given first frame conditions every segment."""
    n, seg = 10, 4  # [0, 4), [4, 8), [8, 10)
    sampler = DDIMSampler(num_steps=2, guidance_scale=1.0)
    steps = len(sampler.timesteps)
    model = Recorder()
    first = torch.randn(B, 4, H, W)
    long_video = LongVideo("independent", seg)
    assert long_video.spans(n) == [(0, 4), (4, 8), (8, 10)]
    out = generate_long_video(
        model,
        Conditions(pose=frame_index_pose(n)),
        n,
        sampler,
        (B, 4, H, W),
        torch.Generator().manual_seed(0),
        long_video,
        first_frame_latent=first,
        progress=False,
    )
    assert out.shape == (B, 4, n, H, W)
    assert [model.frames[k * steps] for k in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(torch.equal(f, first) for f in model.frame0)  # the same first frame, never a handed-over one
    assert torch.equal(out[:, :, 4], first) and torch.equal(out[:, :, 8], first)


def test_long_video_settings_are_checked():
    with pytest.raises(ValueError, match="mode"):
        LongVideo("loop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment_frames >= 2"):
        LongVideo("chain", 1)
    assert LongVideo("window", 4, 2).spans(9) == window_spans(9, 4, 2)
    assert LongVideo("chain", 16).spans(10) == [(0, 10)]  # one segment: the clip is shorter
    # one driving frame is one segment in every mode (it failed in chain mode: "segment_frames >= 2, got 1")
    assert all(LongVideo(mode, 4, 2).spans(1) == [(0, 1)] for mode in ("chain", "window", "independent"))
