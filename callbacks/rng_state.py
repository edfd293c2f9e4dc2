"""Save and restore the global RNG states with each checkpoint, so that a resumed run draws the same
condition-dropout masks, timesteps and noise as an uninterrupted one (Lightning does not store them)."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    # Plain tuples, ints and tensors only: checkpoints must load with torch.load(weights_only=True).
    kind, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGState(L.Callback):
    """Python, NumPy, torch (and CUDA) RNG states of every rank, stored in each checkpoint.

    The states are taken when the checkpoint is written (after a step) and put back right before the
    first training batch after a resume: anything that draws from the global generators between the
    restore and that batch (a new DataLoader iterator draws its base seed) does not shift the stream.
    Every rank contributes its own state (gathered when ``torch.distributed`` is initialised; the
    checkpoint is written by rank 0). Resuming with a different world size reuses rank 0's state on
    the new ranks.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Lightning calls this on every rank while dumping a checkpoint: a valid place for a collective.
        local = capture_rng_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        return {"per_rank": per_rank}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is None:
            return
        per_rank = self._pending["per_rank"]
        restore_rng_state(
            per_rank[trainer.global_rank] if trainer.global_rank < len(per_rank) else per_rank[0]
        )
        self._pending = None
