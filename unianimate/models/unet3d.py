"""The video denoising UNet: Stable Diffusion 2.1 layout inflated to video (SPEC §2).

Compatible with the release's ``UNetSD_UniAnimate`` UNet part (``tools/modules/unet/unet_unianimate.py``);
``state_dict_adapter.py`` maps its keys. Spatial layers see every frame as an independent image;
temporal modules (17 in the release) see all frames at every pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from unianimate.models.attention import AttentionBackend
from unianimate.models.init import zero_module
from unianimate.models.resblock import Downsample, ResBlock, Upsample
from unianimate.models.spatial_transformer import SpatialTransformer
from unianimate.models.temporal import TemporalChoice, TemporalName, temporal_choice


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding, cos half first then sin, f_k = 10000^(-k / (dim/2)). t: b -> b dim."""
    half = dim // 2
    t = t.float()
    freqs = torch.pow(10000, -torch.arange(half, device=t.device).to(t).div(half))
    args = torch.outer(t, freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class TimeEmbedding(nn.Module):
    def __init__(self, dim: int, emb_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, emb_dim)
        self.linear_2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def _run_temporal(module: nn.Module, x: Tensor, num_frames: int) -> Tensor:
    """Apply a (b c f h w -> b c f h w) temporal module to (b f) c h w features."""
    x = module(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames))
    return rearrange(x, "b c f h w -> (b f) c h w")


class VideoBlock(nn.Module):
    """ResBlock, then optionally spatial + temporal attention, then optionally an upsampler."""

    def __init__(
        self,
        resnet: ResBlock,
        spatial_attn: SpatialTransformer | None = None,
        temporal_attn: nn.Module | None = None,
        upsample: Upsample | None = None,
    ) -> None:
        super().__init__()
        self.resnet = resnet
        self.spatial_attn = spatial_attn
        self.temporal_attn = temporal_attn
        self.upsample = upsample

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """x: (b f) c h w, emb: (b f) d, context: (b f) n d -> (b f) c' h' w'."""
        x = self.resnet(x, emb, num_frames)
        if self.spatial_attn is not None:
            x = self.spatial_attn(x, context)
        if self.temporal_attn is not None:
            x = _run_temporal(self.temporal_attn, x, num_frames)
        if self.upsample is not None:
            x = self.upsample(x)
        return x


class MidBlock(nn.Module):
    def __init__(
        self,
        resnet_1: ResBlock,
        spatial_attn: SpatialTransformer,
        temporal_attn: nn.Module,
        resnet_2: ResBlock,
    ) -> None:
        super().__init__()
        self.resnet_1 = resnet_1
        self.spatial_attn = spatial_attn
        self.temporal_attn = temporal_attn
        self.resnet_2 = resnet_2

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """x: (b f) c h w -> (b f) c h w."""
        x = self.resnet_1(x, emb, num_frames)
        x = self.spatial_attn(x, context)
        x = _run_temporal(self.temporal_attn, x, num_frames)
        return self.resnet_2(x, emb, num_frames)


class UNet3D(nn.Module):
    """Video UNet. Defaults are the release: 320 channels, mult (1, 2, 4, 4), 2 res blocks,
    attention at levels 0-2, head width 64, context 1024, first temporal module 8 heads x 64."""

    def __init__(
        self,
        in_channels: int = 12,
        out_channels: int = 4,
        base_channels: int = 320,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (0, 1, 2),
        head_dim: int = 64,
        context_dim: int = 1024,
        temporal_in_heads: int = 8,
        dropout: float = 0.1,
        temporal: TemporalChoice | TemporalName = "transformer",
        attention: AttentionBackend = "sdpa",
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.temporal = temporal_choice(temporal)
        if attention not in ("sdpa", "math"):
            raise ValueError(f"unknown attention backend {attention!r}; expected 'sdpa' or 'math'")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.base_channels = base_channels
        self.context_dim = context_dim
        self.attention = attention
        self.checkpointing = checkpointing
        self.size_multiple = 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * base_channels

        def temporal_module(channels: int, heads: int) -> nn.Module:
            return self.temporal.build(channels, heads, head_dim, attention)

        def attention_pair(channels: int) -> tuple[SpatialTransformer, nn.Module]:
            spatial = SpatialTransformer(channels, head_dim, context_dim, backend=attention)
            return spatial, temporal_module(channels, channels // head_dim)

        self.time_embed = TimeEmbedding(base_channels, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.temporal_in = temporal_module(base_channels, temporal_in_heads)

        # Encoder: res blocks per level, a downsampler after every level but the last.
        self.down_blocks = nn.ModuleList()
        skip_channels = [base_channels]
        channels = base_channels
        levels = len(channel_mult)
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = base_channels * mult
                spatial, temporal_attn = attention_pair(out) if level in attention_levels else (None, None)
                resnet = ResBlock(channels, out, emb_dim, dropout)
                self.down_blocks.append(VideoBlock(resnet, spatial, temporal_attn))
                channels = out
                skip_channels.append(channels)
            if level != levels - 1:
                self.down_blocks.append(Downsample(channels))
                skip_channels.append(channels)

        # The middle block always has attention.
        self.mid_block = MidBlock(
            ResBlock(channels, channels, emb_dim, dropout),
            *attention_pair(channels),
            ResBlock(channels, channels, emb_dim, dropout),
        )

        # Decoder: num_res_blocks + 1 blocks per level (one per skip), an upsampler ending all but the last.
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            out = base_channels * channel_mult[level]
            for j in range(num_res_blocks + 1):
                resnet = ResBlock(channels + skip_channels.pop(), out, emb_dim, dropout)
                spatial, temporal_attn = attention_pair(out) if level in attention_levels else (None, None)
                upsample = Upsample(out) if level != 0 and j == num_res_blocks else None
                self.up_blocks.append(VideoBlock(resnet, spatial, temporal_attn, upsample))
                channels = out

        self.norm_out = nn.GroupNorm(32, channels)
        # The release zero-initialises the head conv.
        self.conv_out = zero_module(nn.Conv2d(channels, out_channels, 3, padding=1))

    def _call(self, block: Callable[..., Tensor], *args: Tensor | int) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """x: b c_in f h w, t: b (int timesteps), context: b n d -> b c_out f h w.

        Every frame of a sample gets the same timestep embedding and context.
        """
        b, _, f, height, width = x.shape
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"latent size {height}x{width} must be a multiple of {self.size_multiple}")
        # Computed in float32 as released, then cast for a model held in bf16/fp16.
        emb = self.time_embed(timestep_embedding(t, self.base_channels).to(x.dtype)).repeat_interleave(
            f, dim=0
        )
        context = context.repeat_interleave(f, dim=0)

        h = self.conv_in(rearrange(x, "b c f h w -> (b f) c h w"))
        h = self._call(partial(_run_temporal, self.temporal_in), h, f)
        skips = [h]
        for block in self.down_blocks:
            h = block(h) if isinstance(block, Downsample) else self._call(block, h, emb, context, f)
            skips.append(h)
        h = self._call(self.mid_block, h, emb, context, f)
        for block in self.up_blocks:
            h = self._call(block, torch.cat([h, skips.pop()], dim=1), emb, context, f)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return rearrange(h, "(b f) c h w -> b c f h w", b=b)
