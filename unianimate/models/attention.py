"""Multi-head attention and the transformer block shared by the spatial and temporal transformers.

Numerics follow the official UniAnimate release (``tools/modules/unet/util.py``: memory-efficient
attention, ``BasicTransformerBlock``, GEGLU feed-forward): heads are split head-major
(channel = head * head_dim + i) and the scale is 1 / sqrt(head_dim).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

AttentionBackend = Literal["sdpa", "math"]


def multihead_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, backend: AttentionBackend) -> Tensor:
    """Scaled dot-product attention over ``heads`` heads.

    q: b n (heads d), k and v: b m (heads d) -> b n (heads d). ``sdpa`` is
    ``torch.nn.functional.scaled_dot_product_attention``; ``math`` is the explicit softmax reference.
    """
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v)
    elif backend == "math":
        scores = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        out = torch.matmul(scores.float().softmax(dim=-1).to(v.dtype), v)
    else:
        raise ValueError(f"unknown attention backend {backend!r}; expected 'sdpa' or 'math'")
    return rearrange(out, "b h n d -> b n (h d)")


class Attention(nn.Module):
    """Self-attention (``context_dim=None``) or cross-attention to a context of width ``context_dim``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        backend: AttentionBackend = "sdpa",
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.backend = backend
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: b n d, context: b m d_ctx (None: x itself) -> b n d."""
        context = x if context is None else context
        out = multihead_attention(
            self.to_q(x), self.to_k(context), self.to_v(context), self.heads, self.backend
        )
        return self.to_out(out)


class GEGLUFeedForward(nn.Module):
    """Linear to 2 x 4 x dim, value * GELU(gate) (value = first half), Linear back to dim."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, a second attention, GEGLU feed-forward.

    The second attention is cross-attention when ``context_dim`` is given (spatial transformers)
    and a second self-attention otherwise (temporal transformers), as in the release.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        backend: AttentionBackend = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, backend=backend)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim, backend=backend)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GEGLUFeedForward(dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x: b n d, context: b m d_ctx or None -> b n d."""
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))
