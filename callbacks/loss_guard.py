"""Stop training on a non-finite loss or a loss spike, before the bad step reaches the weights."""

from __future__ import annotations

import math
import statistics
from collections import deque

import lightning as L
import torch


class LossSpikeError(RuntimeError):
    """Raised by :class:`LossGuard`; training stops and the last checkpoint on disk stays the last good one."""


class LossGuard(L.Callback):
    """Raise :class:`LossSpikeError` when the training loss is NaN/inf or above ``factor`` x the
    median of the last ``window`` losses (checked once ``min_history`` losses are known). The loss
    is the mean over ranks. Diffusion losses vary with the sampled timesteps: keep ``factor`` well
    above the spread of a healthy run at your batch size.

    The check runs in ``on_before_backward``: a bad loss never produces gradients, an optimizer step,
    an EMA update or a checkpoint, so ``last.ckpt`` keeps the last good weights. Costs one scalar
    all-reduce and one device sync per step.
    """

    def __init__(self, factor: float = 20.0, window: int = 100, min_history: int = 20) -> None:
        if factor <= 1.0:
            raise ValueError(f"factor must be > 1, got {factor}")
        self.factor = factor
        self.min_history = min_history
        self.history: deque[float] = deque(maxlen=window)

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        # The mean over ranks: every rank sees the same value, keeps the same history and so takes
        # the same decision (no rank left waiting in a collective), and one sample's noise counts less.
        value = float(trainer.strategy.reduce(loss.detach().float(), reduce_op="mean").item())
        reason = None
        if not math.isfinite(value):
            reason = f"non-finite loss {value}"
        elif len(self.history) >= self.min_history:
            median = statistics.median(self.history)
            if value > self.factor * median:
                reason = f"loss {value:.6g} > {self.factor:g} x running median {median:.6g}"
        if reason is not None:
            last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
            raise LossSpikeError(
                f"LossGuard stopped training at step {trainer.global_step}: {reason}. "
                f"The step was not applied; last good checkpoint: {last}"
            )
        self.history.append(value)

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history.extend(state_dict["history"])
