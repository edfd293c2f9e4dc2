"""Offset noise (SPEC §3): one extra Gaussian offset per sample, channel and frame."""

from __future__ import annotations

import torch
from torch import Tensor


def offset_noise(
    shape: tuple[int, int, int, int, int],
    strength: float = 0.1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """randn(b, c, f, h, w) + strength * randn(b, c, f, 1, 1), broadcast over h and w.

    The base noise is drawn first, then the offsets: the order of the release's noise prior
    (fixture `prior.*`), so a seeded generator gives the same tensors as the release.
    """
    if len(shape) != 5:
        raise ValueError(f"offset_noise expects a (b, c, f, h, w) shape, got {tuple(shape)}")
    b, c, f, _, _ = shape
    base = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    offset = torch.randn((b, c, f, 1, 1), generator=generator, device=device, dtype=dtype)
    return base + strength * offset
