"""Residual block with a temporal conv stack, and the resamplers (release: ``ResBlock``,
``TemporalConvBlock_v2``, ``Downsample``, ``Upsample`` in ``tools/modules/unet/util.py``)."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from unianimate.models.init import zero_module


class TemporalConv(nn.Module):
    """GroupNorm (statistics over all frames), SiLU, dropout, Conv3d with kernel (3, 1, 1)."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.dropout(F.silu(self.norm(x))))


class TemporalConvStack(nn.Module):
    """x + four temporal convs; the last conv starts at zero so the stack starts as the identity."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        # The release has no dropout before the first conv.
        self.layers = nn.ModuleList([TemporalConv(channels, 0.0 if i == 0 else dropout) for i in range(4)])
        zero_module(self.layers[-1].conv)

    def forward(self, x: Tensor) -> Tensor:
        """x: b c f h w -> b c f h w."""
        y = x
        for layer in self.layers:
            y = layer(y)
        return x + y


class ResBlock(nn.Module):
    """Per-frame residual block with a timestep bias, followed by the temporal conv stack."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = nn.GroupNorm(32, out_channels)
        self.dropout = nn.Dropout(dropout)
        # The residual branch starts at zero, like the release.
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.temporal_conv = TemporalConvStack(out_channels, dropout)

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:
        """x: (b f) c h w, emb: (b f) d -> (b f) c_out h w."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        h = self.skip(x) + h
        h = self.temporal_conv(rearrange(h, "(b f) c h w -> b c f h w", f=num_frames))
        return rearrange(h, "b c f h w -> (b f) c h w")


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (b f) c h w -> (b f) c ceil(h/2) ceil(w/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (b f) c h w -> (b f) c 2h 2w (nearest, then conv)."""
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
