"""Spatial transformer: per-frame self-attention, cross-attention to the context, GEGLU FF.

Compatible with the release's ``SpatialTransformer`` built with ``use_linear=True``.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from unianimate.models.attention import AttentionBackend, TransformerBlock
from unianimate.models.init import zero_module


class SpatialTransformer(nn.Module):
    def __init__(
        self, channels: int, head_dim: int, context_dim: int, backend: AttentionBackend = "sdpa"
    ) -> None:
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.block = TransformerBlock(inner, heads, head_dim, context_dim=context_dim, backend=backend)
        # Starts as the identity, like the release.
        self.proj_out = zero_module(nn.Linear(inner, channels))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """x: (b f) c h w, context: (b f) n d -> (b f) c h w."""
        h, w = x.shape[-2:]
        y = rearrange(self.norm(x), "b c h w -> b (h w) c")
        y = self.proj_out(self.block(self.proj_in(y), context))
        return x + rearrange(y, "b (h w) c -> b c h w", h=h, w=w)
