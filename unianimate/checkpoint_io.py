"""Atomic checkpoint writes: a crash or ``kill -9`` at any moment leaves either the old file or the new one.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction (a temporary file in the
system temp dir, moved into place without an fsync); this plugin writes to a temporary file in the
destination directory, fsyncs it, ``os.replace``-s it over the target (atomic on POSIX) and fsyncs
the directory, so a power loss cannot leave a renamed but empty file either. At the end of fit,
:func:`rewrite_stale_last_checkpoint` makes ``last.ckpt`` the final step.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes (remote URLs keep Lightning's fsspec path).

    Leftover ``.<name>.*.tmp`` files from a killed write are harmless and can be deleted.
    Used by the single-file strategies (DDP, FSDP with a full state dict); DeepSpeed writes its own
    shard folders and does not use a CheckpointIO.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, path)


def last_checkpoint_path(
    dirpath: str | Path, callback: ModelCheckpoint | type[ModelCheckpoint] = ModelCheckpoint
) -> Path:
    """``<dirpath>/last.ckpt``, named as ``callback`` names its last checkpoint."""
    return Path(dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"


def rewrite_stale_last_checkpoint(trainer: L.Trainer) -> None:
    """At the end of fit, make ``last.ckpt`` hold the final step. Lightning 2.6 writes it then only
    if no ``last.ckpt`` was written before, so with ``every_n_train_steps`` not dividing
    ``max_steps`` it kept an earlier step (the demo's 1,200 of 1,250)."""
    for callback in trainer.checkpoint_callbacks:
        if not (callback.save_last and callback.dirpath):
            continue
        if callback._last_global_step_saved != trainer.global_step:  # no public accessor
            trainer.save_checkpoint(last_checkpoint_path(callback.dirpath, callback))
