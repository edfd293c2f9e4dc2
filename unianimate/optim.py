"""AdamW parameter groups and the learning-rate schedule of :class:`unianimate.module.UniAnimateModule`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

LrDecay = Literal["none", "cosine"]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for weight matrices and kernels; none for biases, norm scales (1-d)
    and parameters flagged ``_no_weight_decay`` (Mamba's ``A_log`` and ``D``, as mamba-ssm does)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_factor(
    warmup_steps: int, decay: LrDecay = "none", total_steps: int | None = None
) -> Callable[[int], float]:
    """The factor of the base learning rate at optimizer step ``step`` (``LambdaLR``'s function):
    linear warm-up over ``warmup_steps``, then constant (``none``) or a half cosine that reaches 0
    at ``total_steps`` (``cosine``: a short run ends on small steps, SGDR / the LLM recipes)."""
    warmup = max(warmup_steps, 1)
    if decay == "cosine" and (total_steps is None or total_steps <= warmup):
        raise ValueError(
            f"lr_decay=cosine needs trainer.max_steps above warmup_steps ({warmup}), got {total_steps}"
        )

    def factor(step: int) -> float:
        if step < warmup or decay == "none":
            return min(1.0, (step + 1) / warmup)
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
