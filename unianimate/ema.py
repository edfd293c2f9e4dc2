"""Exponential moving average of the trainable weights (SPEC §3), kept in float32."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn


class EMA:
    """A float32 shadow copy of a module's trainable parameters.

    ``decay_at(n) = min(decay, (1 + n) / (10 + n))`` when ``warmup`` is on: early averages follow
    the weights closely instead of remembering the random initialisation for ~1/(1-decay) steps.
    Not an ``nn.Module``: it must not be seen by optimizers, strategies or ``state_dict``;
    the LightningModule stores it in checkpoints under its own key.
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            name: p.detach().float().clone() for name, p in module.named_parameters() if p.requires_grad
        }

    def decay_at(self, num_updates: int) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + num_updates) / (10 + num_updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.decay_at(self.num_updates)
        params = dict(module.named_parameters())
        shadows = list(self.shadow.values())
        current = [params[name].detach().float() for name in self.shadow]
        if shadows and shadows[0].device != current[0].device:
            self.to(current[0].device)
            shadows = list(self.shadow.values())
        # shadow = decay * shadow + (1 - decay) * param, as one fused multi-tensor op.
        torch._foreach_lerp_(shadows, current, 1.0 - decay)
        self.num_updates += 1

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {k: v.to(device) for k, v in self.shadow.items()}
        return self

    @contextmanager
    @torch.no_grad()
    def swapped_in(self, module: nn.Module):
        """Temporarily load the averaged weights into ``module`` (validation, sampling)."""
        params = dict(module.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        for name, value in self.shadow.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
        try:
            yield module
        finally:
            for name, value in backup.items():
                params[name].copy_(value)

    def export(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the averaged weights as safetensors (our module names; ``UniAnimate.load_state_dict``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.shadow.items()}
        save_file(
            tensors,
            str(tmp),
            metadata={"weights": "ema", "num_updates": str(self.num_updates), **(metadata or {})},
        )
        tmp.replace(path)  # atomic: never a half-written export under the final name
        return path

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": self.shadow,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        unexpected = set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise KeyError(
                f"EMA state does not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        device = next(iter(self.shadow.values())).device if self.shadow else "cpu"
        self.shadow = {k: state["shadow"][k].float().to(device) for k in self.shadow}
        self.num_updates = int(state["num_updates"])
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
