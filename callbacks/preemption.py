"""Checkpoint and stop at the next step boundary when a preemption signal (SIGUSR1) arrives."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


class PreemptionCheckpoint(L.Callback):
    """On ``signal_name`` (default SIGUSR1): at the end of the current training step, write
    ``last.ckpt`` in the ModelCheckpoint directory (``<default_root_dir>/checkpoints`` without one),
    then stop cleanly. Restart with ``--ckpt_path last``.

    The handler only sets a flag; the checkpoint is written between steps, so it never holds a
    half-applied optimizer step. Ranks agree on stopping (any rank signalled -> all save and stop).

    Under SLURM with Lightning's ``SLURMEnvironment(auto_requeue=True)`` (Lightning's default when
    it detects SLURM) Lightning owns the requeue signal: it writes ``hpc_ckpt_<n>.ckpt`` in
    ``default_root_dir``, runs ``scontrol requeue`` and resumes from it on restart; this callback
    then installs nothing. Everywhere else (torchrun, Kubernetes, a workstation) this callback is the
    handler: send the signal to every process (``kill -USR1``) before the kill deadline.
    """

    def __init__(self, signal_name: str = "SIGUSR1") -> None:
        self.signum = signal.Signals[signal_name]
        self.received = False
        self.saved_path: str | None = None
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return  # Lightning's SLURM auto-requeue handles the signal (see the class docstring)
        self._previous = signal.signal(self.signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        path = str(
            Path(_checkpoint_dir(trainer))
            / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        )
        trainer.save_checkpoint(path)
        self.saved_path = path
        trainer.should_stop = True
        rank_zero_info(f"{self.signum.name}: saved {path} at step {trainer.global_step}; stopping")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None


def _checkpoint_dir(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        return callback.dirpath
    return str(Path(trainer.default_root_dir) / "checkpoints")
