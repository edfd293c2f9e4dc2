"""Log training throughput (samples/s, steps/s) and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from typing import Any

import lightning as L
import torch

from unianimate.batch import VideoBatch


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated CUDA memory on ``device``; on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class Throughput(L.Callback):
    """Every ``log_every_n_steps`` optimizer steps, log ``perf/samples_per_s`` (per rank x world
    size), ``perf/steps_per_s`` and ``perf/peak_mem_gib`` (this rank). Time is wall time between
    logs, so it includes data loading, logging and checkpointing: what a run actually gets."""

    def __init__(self, log_every_n_steps: int = 10) -> None:
        self.log_every_n_steps = log_every_n_steps
        self._start: float | None = None
        self._samples = 0
        self._steps = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._start is None:  # the first step includes warm-up: start the clock after it
            self._start = now
            return
        self._samples += _batch_size(batch)
        self._steps += 1
        if self._steps < self.log_every_n_steps:
            return
        elapsed = now - self._start
        metrics = {
            "perf/samples_per_s": self._samples * trainer.world_size / elapsed,
            "perf/steps_per_s": self._steps / elapsed,
            "perf/peak_mem_gib": peak_memory_gib(pl_module.device),
        }
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        self._start, self._samples, self._steps = now, 0, 0


def _batch_size(batch: Any) -> int:
    return len(batch) if isinstance(batch, VideoBatch) else 1
