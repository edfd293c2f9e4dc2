"""Temporal transformer: attention along frames at every pixel, no positional encoding.

Compatible with the release's ``TemporalTransformer`` (``only_self_att=True``, Conv1d projections).
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from unianimate.models.attention import AttentionBackend, TransformerBlock
from unianimate.models.init import zero_module


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, head_dim: int, backend: AttentionBackend = "sdpa") -> None:
        super().__init__()
        inner = heads * head_dim
        # Statistics over (channels in group, frames, h, w): all frames of a sample share them.
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Conv1d(channels, inner, kernel_size=1)
        self.block = TransformerBlock(inner, heads, head_dim, context_dim=None, backend=backend)
        # Starts as the identity, like the release.
        self.proj_out = zero_module(nn.Conv1d(inner, channels, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        """x: b c f h w -> b c f h w (residual included)."""
        b, _, _, h, w = x.shape
        y = self.proj_in(rearrange(self.norm(x), "b c f h w -> (b h w) c f"))
        y = self.block(rearrange(y, "n c f -> n f c"))
        y = self.proj_out(rearrange(y, "n f c -> n c f"))
        return x + rearrange(y, "(b h w) c f -> b c f h w", b=b, h=h, w=w)
