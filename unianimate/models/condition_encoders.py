"""Trainable condition encoders: pose, reference pose, first frame, reference latent (SPEC §2).

Compatible with the release's ``dwpose_embedding`` / ``randomref_pose2_embedding`` /
``local_image_embedding`` / ``randomref_embedding2`` and their ``Transformer_v2`` "after" modules.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from unianimate.models.attention import AttentionBackend, multihead_attention


class FrameTransformer(nn.Module):
    """One transformer layer along frames at every pixel (release: ``Transformer_v2``, depth 1).

    x += attn(LayerNorm x) with ``heads`` heads of width ``dim``; then x += FF(x) with no norm
    before the feed-forward (as released). No positional encoding.
    """

    def __init__(self, dim: int, heads: int = 2, backend: AttentionBackend = "sdpa") -> None:
        super().__init__()
        self.heads = heads
        self.backend = backend
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim, bias=False)
        self.to_out = nn.Linear(heads * dim, dim)
        self.ff_in = nn.Linear(dim, 4 * dim)
        self.ff_out = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: b c f h w -> b c f h w."""
        b, _, _, h, w = x.shape
        y = rearrange(x, "b c f h w -> (b h w) f c")
        q, k, v = self.to_qkv(self.norm(y)).chunk(3, dim=-1)
        y = y + self.to_out(multihead_attention(q, k, v, self.heads, self.backend))
        y = y + self.ff_out(F.gelu(self.ff_in(y)))
        return rearrange(y, "(b h w) f c -> b c f h w", b=b, h=h, w=w)


class PixelEncoder(nn.Module):
    """Pictures in [0, 1] at pixel size -> features at latent size, then the frame transformer.

    conv 3 -> hidden, SiLU, average pool to 4x the latent size, conv stride 2, SiLU, conv stride 2
    -> out. With the SD VAE (/8) the pool goes to (H/2, W/2), as in the release; a /4 autoencoder
    (the demo's) pools to (H, W), i.e. not at all. ``latent_size`` (h, w) defaults to (H/8, W/8).
    """

    def __init__(self, out_channels: int, hidden_channels: int, backend: AttentionBackend = "sdpa") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, hidden_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_channels, hidden_channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(hidden_channels, out_channels, 3, stride=2, padding=1)
        self.frame_transformer = FrameTransformer(out_channels, backend=backend)

    def encode_frames(self, x: Tensor, latent_size: tuple[int, int] | None = None) -> Tensor:
        """Per-frame convolutions only. x: b 3 f H W -> b c f h w ((h, w) = ``latent_size``)."""
        b, _, _, height, width = x.shape
        y = F.silu(self.conv1(rearrange(x, "b c f h w -> (b f) c h w")))
        # The release pools to half its configured resolution, i.e. half the input size; 4x the
        # latent size is the same thing for /8 latents and gives the latent size for any other.
        pooled = (
            (height // 2, width // 2) if latent_size is None else (4 * latent_size[0], 4 * latent_size[1])
        )
        if pooled != (height, width):  # pooling to the same size is the identity: skip it
            y = F.adaptive_avg_pool2d(y, pooled)
        y = self.conv3(F.silu(self.conv2(y)))
        return rearrange(y, "(b f) c h w -> b c f h w", b=b)

    def forward(self, x: Tensor, latent_size: tuple[int, int] | None = None) -> Tensor:
        """x: b 3 f H W -> b c f h w ((h, w) = ``latent_size``, default (H/8, W/8))."""
        return self.frame_transformer(self.encode_frames(x, latent_size))


class LatentEncoder(nn.Module):
    """Reference latent -> guidance features: three stride-1 3x3 convs with SiLU, frame transformer."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int, backend: AttentionBackend = "sdpa"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1)
        self.conv3 = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        self.frame_transformer = FrameTransformer(out_channels, backend=backend)

    def forward(self, x: Tensor) -> Tensor:
        """x: b c_in f h w -> b c_out f h w."""
        b = x.shape[0]
        y = rearrange(x, "b c f h w -> (b f) c h w")
        y = self.conv3(F.silu(self.conv2(F.silu(self.conv1(y)))))
        return self.frame_transformer(rearrange(y, "(b f) c h w -> b c f h w", b=b))
