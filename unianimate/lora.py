"""LoRA fine-tuning of the denoiser through ``peft`` (``--model.lora.rank 64``).

The adapters are injected into the plain ``UniAnimate`` module (``peft.inject_adapter_in_model``),
so the denoiser keeps its class and forward; every other weight is frozen. Only the adapters train,
the EMA covers only them, and checkpoints and exports hold only them; the frozen base comes from
``--model.init_weights`` at every start (also on resume). :func:`merged_state_dict` folds the
adapters into the base: W + (alpha / rank) * B A.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

ADAPTER = "default"


@dataclass(frozen=True)
class LoRA:
    """LoRA settings.

    Args:
        rank: the adapters' rank r.
        alpha: scale numerator (scale = alpha / rank); ``None``: alpha = rank (scale 1).
        target_modules: layer names (peft's suffix match) that get adapters. Default: the attention
            projections of every spatial and temporal transformer (``to_q/k/v/out``) and the
            temporal Mamba's input / output projections (``in_proj``, ``out_proj``).
        dropout: dropout on the adapter's input.
    """

    rank: int = 64
    alpha: float | None = None
    target_modules: list[str] = field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out", "in_proj", "out_proj"]
    )
    dropout: float = 0.0

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject the adapters (B starts at zero: the model is unchanged) and freeze everything else."""
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha if self.alpha is not None else self.rank,
            target_modules=list(self.target_modules),
            lora_dropout=self.dropout,
            bias="none",
        )
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
        for name, p in model.named_parameters():
            p.requires_grad_(is_lora_key(name))
        return model


def is_lora_key(key: str) -> bool:
    return ".lora_" in key


def lora_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if is_lora_key(k)}


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The full denoiser with the adapters folded in, keys as without LoRA (loads into a plain ``UniAnimate``)."""
    from peft.tuners.lora import LoraLayer

    merged = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            base = module.get_base_layer()
            merged[f"{name}.weight"] = base.weight + module.get_delta_weight(ADAPTER).to(base.weight.dtype)
    out = {}
    for key, value in model.state_dict().items():
        if is_lora_key(key):
            continue
        plain = key.replace(".base_layer", "")
        out[plain] = merged.get(plain, value).detach().clone().contiguous()
    return out


def save_merged(model: nn.Module, path: Path) -> Path:
    """Write :func:`merged_state_dict` as safetensors (a full denoiser, ``--model.init_weights`` reads it)."""
    save_file(merged_state_dict(model), str(path), metadata={"weights": "lora merged"})
    return path
