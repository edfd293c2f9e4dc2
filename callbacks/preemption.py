"""Checkpoint and stop at the next step boundary when a stop signal (SIGUSR1, SIGTERM) arrives."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from unianimate import stop_signals
from unianimate.checkpoint_io import last_checkpoint_path
from unianimate.errors import StoppedBySignal


class PreemptionCheckpoint(L.Callback):
    """On any of ``signal_names`` (default SIGUSR1 and SIGTERM): at the end of the current training
    step, write ``last.ckpt`` in the ModelCheckpoint directory (``<default_root_dir>/checkpoints``
    without one), stop, and end the run with :class:`~unianimate.errors.StoppedBySignal`: the
    process exits 128 + the signal number (a scheduler reads "terminated", not "finished").
    Restart with ``--ckpt_path last``. A signal during start-up (before the first training step;
    ``unianimate`` remembers it from its first line) ends the run at once, with nothing to save.

    The handler only sets a flag; the checkpoint is written between steps, so it never holds a
    half-applied optimizer step. Ranks agree on stopping (any rank signalled -> all save and stop);
    a launcher's child processes get the signal forwarded.

    Under SLURM with Lightning's ``SLURMEnvironment(auto_requeue=True)`` (Lightning's default when
    it detects SLURM) Lightning owns the signals: it writes ``hpc_ckpt_<n>.ckpt`` in
    ``default_root_dir``, runs ``scontrol requeue`` and resumes from it on restart; this callback
    then installs nothing. Everywhere else (torchrun, Kubernetes, a workstation) this callback is the
    handler: send the signal to every process (``kill -USR1`` / ``kill -TERM``) before the deadline.
    """

    def __init__(self, signal_names: list[str] | None = None) -> None:
        self.signums = [signal.Signals[name] for name in (signal_names or ["SIGUSR1", "SIGTERM"])]
        self.received: int | None = None
        self.saved_path: str | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return  # Lightning's SLURM auto-requeue handles the signals (see the class docstring)
        early = stop_signals.received()
        if trainer.strategy.reduce_boolean_decision(early is not None, all=False):
            name = signal.Signals(early or self.signums[0]).name
            raise StoppedBySignal(
                f"{name} during start-up, before the first training step: stopped, nothing trained "
                "and nothing saved",
                early or self.signums[0],
            )
        self._trainer = trainer
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.signums}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if launcher is not None:  # processes this one started (ddp subprocess, spawn)
                launcher.kill(signum)
        self.received = signum

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.saved_path is not None or not trainer.strategy.reduce_boolean_decision(
            self.received is not None, all=False
        ):
            return
        path = str(last_checkpoint_path(_checkpoint_dir(trainer)))
        trainer.save_checkpoint(path)
        self.saved_path = path
        trainer.should_stop = True
        name = signal.Signals(self.received or self.signums[0]).name
        rank_zero_info(f"{name}: saved {path} at step {trainer.global_step}; stopping")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        if self.saved_path is not None:
            signum = self.received or self.signums[0]
            raise StoppedBySignal(
                f"{signal.Signals(signum).name}: stopped at step {trainer.global_step} before the end; "
                f"saved {self.saved_path}; resume with --ckpt_path last",
                signum,
            )


def _checkpoint_dir(trainer: L.Trainer) -> str:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        return callback.dirpath
    return str(Path(trainer.default_root_dir) / "checkpoints")
