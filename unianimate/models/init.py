"""Explicit initialisation helpers (STYLE §8)."""

from __future__ import annotations

from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` so that the branch it ends starts as a no-op."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module
