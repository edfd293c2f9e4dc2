"""A tiny real UniAnimate for sampling tests (imported as ``model_helpers``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def tiny_unianimate() -> nn.Module:
    """The tiny UniAnimate with small random weights everywhere (zero-init heads would give v = 0)."""
    mod = pytest.importorskip("unianimate.models.unianimate")
    from unianimate.models.unet3d import UNet3D

    torch.manual_seed(0)
    unet = UNet3D(
        base_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(),
        head_dim=16,
        context_dim=64,
        temporal_in_heads=3,
        dropout=0.0,
    )
    model = mod.UniAnimate(unet, context_dim=64, clip_dim=32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()
