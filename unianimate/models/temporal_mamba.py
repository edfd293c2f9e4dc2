"""Temporal Mamba: the `mamba` choice of temporal module (SPEC §2, "Temporal module").

The UniAnimate paper offers a temporal Mamba in place of temporal attention, run along frames at every
pixel; the paper gives no further detail and the public release has no Mamba code. This module
is GroupNorm -> Mamba over frames (causal, or bidirectional = forward + time-reversed, summed)
-> zero-initialised projection -> residual. Time and memory grow linearly with frames.
"""

from einops import rearrange
from torch import Tensor, nn

from unianimate.models.init import zero_module
from unianimate.models.mamba import Mamba
from unianimate.models.selective_scan import ScanBackend


def _num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides channels (32 for the UNet's widths)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class TemporalMamba(nn.Module):
    """Per-pixel Mamba along frames with a residual; an identity at initialisation."""

    def __init__(
        self,
        channels: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        bidirectional: bool = True,
        scan_backend: ScanBackend = "torch",
    ) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        # GroupNorm over (c, f, h, w) per sample: statistics cover all frames of a clip.
        self.norm = nn.GroupNorm(_num_groups(channels), channels, eps=1e-6)
        self.mamba = Mamba(channels, d_state, d_conv, expand, scan_backend=scan_backend)
        self.mamba_reversed = (
            Mamba(channels, d_state, d_conv, expand, scan_backend=scan_backend) if bidirectional else None
        )
        # Starts as the identity, so inserting it into a pretrained UNet changes nothing.
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, c, f, h, w) -> (b, c, f, h, w)."""
        b, _, _, h, w = x.shape
        seq = rearrange(self.norm(x), "b c f h w -> (b h w) f c")
        out = self.mamba(seq)
        if self.mamba_reversed is not None:
            out = out + self.mamba_reversed(seq.flip(1)).flip(1)
        out = self.proj_out(out)
        return x + rearrange(out, "(b h w) f c -> b c f h w", b=b, h=h, w=w)
