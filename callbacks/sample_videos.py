"""Sample videos from a fixed validation set with fixed seeds, to TensorBoard and as mp4 files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from unianimate.batch import VideoBatch
from unianimate.visualize import comparison_frames, write_comparison_mp4


class SampleVideos(L.Callback):
    """Every ``every_n_steps`` training steps (0: never) and at the end of fitting, animate the
    first ``num_samples`` validation samples and write reference | pose | generated | ground truth.

    Files go to ``<log_dir>/samples/step_<N>.mp4`` (``final.mp4`` at the end of fitting); the middle
    frame of each grid goes to TensorBoard as an image.
    """

    def __init__(
        self,
        every_n_steps: int = 0,
        num_samples: int = 2,
        on_fit_end: bool = True,
        seed: int = 1234,
        fps: float = 8.0,
    ) -> None:
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.at_fit_end = on_fit_end
        self.seed = seed
        self.fps = fps
        self._batch: VideoBatch | None = None
        self.written: list[Path] = []

    def _fixed_batch(self, trainer: L.Trainer) -> VideoBatch | None:
        if self._batch is None:
            datamodule = trainer.datamodule
            if datamodule is None:
                return None
            # The validation stream is not shuffled: its first samples are a fixed set.
            parts: list[VideoBatch] = []
            for batch in datamodule.val_dataloader():
                parts.append(batch)
                if sum(len(p) for p in parts) >= self.num_samples:
                    break
            if not parts:
                return None
            self._batch = VideoBatch.cat(parts).take(self.num_samples)
        return self._batch

    @torch.no_grad()
    def write(self, trainer: L.Trainer, module: L.LightningModule, name: str) -> Path | None:
        # trainer.log_dir is a collective (a broadcast under DDP): every rank asks, rank 0 writes.
        out_dir = Path(trainer.log_dir or trainer.default_root_dir) / "samples"
        batch = self._fixed_batch(trainer)
        if batch is None or not trainer.is_global_zero:
            return None
        # The DataModule's own transfer hook makes the pixels float, as for every batch it yields.
        batch = trainer.datamodule.on_after_batch_transfer(batch.to(module.device), 0)
        was_training = module.training
        module.eval()
        generated = module.generate(batch, seed=self.seed)
        module.train(was_training)
        rows = [
            comparison_frames(
                batch.ref_image[i],
                batch.pose[i],
                generated[i],
                None if batch.video is None else batch.video[i],
            )
            for i in range(generated.shape[0])
        ]
        path = write_comparison_mp4(out_dir / f"{name}.mp4", rows, self.fps)
        self.written.append(path)
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_image"):
            grid = np.concatenate([row[row.shape[0] // 2] for row in rows], axis=0)
            experiment.add_image("samples", grid, trainer.global_step, dataformats="HWC")
        return path

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0:
            self.write(trainer, module, f"step_{step:06d}")

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.at_fit_end:
            path = self.write(trainer, module, "final")
            if path is not None:
                print(f"wrote {path}")
