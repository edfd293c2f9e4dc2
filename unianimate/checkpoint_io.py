"""Atomic checkpoint writes: a crash or ``kill -9`` at any moment leaves either the old file or the new one.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction (a temporary file in the
system temp dir, moved into place without an fsync); this plugin writes to a temporary file in the
destination directory, fsyncs it, ``os.replace``-s it over the target (atomic on POSIX) and fsyncs
the directory, so a power loss cannot leave a renamed but empty file either.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
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
