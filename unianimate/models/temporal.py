"""The temporal module of the UNet, a typed choice (SPEC §2, "Temporal module").

``UNet3D(temporal=...)`` takes one of these specs (or the shorthand names ``"transformer"`` and
``"mamba"`` for their defaults) and builds its 17 temporal modules from it, so each module's
settings live on its own spec:

    --model.denoiser.unet.temporal=mamba
    --model.denoiser.unet.temporal=MambaTemporal --model.denoiser.unet.temporal.bidirectional=false
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from unianimate.models.attention import AttentionBackend
from unianimate.models.selective_scan import ScanBackend


class TemporalChoice:
    """Builds one temporal module (b c f h w -> b c f h w) for a UNet level."""

    def build(self, channels: int, heads: int, head_dim: int, attention: AttentionBackend) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class TransformerTemporal(TemporalChoice):
    """Temporal attention, the release's temporal transformer (heads x head_dim of the level)."""

    def build(self, channels: int, heads: int, head_dim: int, attention: AttentionBackend) -> nn.Module:
        from unianimate.models.temporal_transformer import TemporalTransformer

        return TemporalTransformer(channels, heads, head_dim, backend=attention)


@dataclass(frozen=True)
class MambaTemporal(TemporalChoice):
    """Temporal Mamba along frames (causal, or bidirectional: forward + time-reversed, summed).

    ``scan_backend``: ``torch`` runs anywhere; ``triton`` and ``mamba_ssm`` (the ``cuda`` extra)
    need a GPU, and a missing one raises with the install command.
    """

    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    bidirectional: bool = True
    scan_backend: ScanBackend = "torch"

    def build(self, channels: int, heads: int, head_dim: int, attention: AttentionBackend) -> nn.Module:
        from unianimate.models.temporal_mamba import TemporalMamba

        return TemporalMamba(
            channels,
            d_state=self.d_state,
            d_conv=self.d_conv,
            expand=self.expand,
            bidirectional=self.bidirectional,
            scan_backend=self.scan_backend,
        )


TemporalName = Literal["transformer", "mamba"]
_BY_NAME: dict[str, type[TemporalChoice]] = {"transformer": TransformerTemporal, "mamba": MambaTemporal}


def temporal_choice(value: TemporalChoice | TemporalName) -> TemporalChoice:
    """A spec, or the default spec of a shorthand name."""
    if isinstance(value, TemporalChoice):
        return value
    if value not in _BY_NAME:
        raise ValueError(f"unknown temporal module {value!r}; expected one of {sorted(_BY_NAME)} or a spec")
    return _BY_NAME[value]()
