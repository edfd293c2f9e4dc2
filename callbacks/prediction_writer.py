"""Writes ``unianimate predict`` results as mp4 files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from unianimate.visualize import comparison_frames, to_uint8_frames, write_comparison_mp4


class PredictionVideoWriter(BasePredictionWriter):
    """For each predicted sample, ``<output_dir>/<key>.mp4`` (the generated video alone) and
    ``<output_dir>/<key>_compare.mp4`` (reference | pose | generated [| ground truth]) and
    ``<output_dir>/<key>_pose.mp4`` (the skeleton pictures the model followed).

    ``output_dir`` defaults to ``<trainer.default_root_dir>/predict``. Existing files are never
    overwritten: a name already taken (by an earlier run, say with another reference image) gets
    the first free ``-1``, ``-2``, ... suffix, and the path written is printed.
    """

    def __init__(self, output_dir: str | None = None, fps: float = 8.0) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.fps = fps
        self.written: list[Path] = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: dict[str, Any],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        out_dir = self.output_dir or Path(trainer.default_root_dir) / "predict"
        generated = prediction["generated"]
        for i, key in enumerate(batch.key):
            name = f"{key}_r{trainer.global_rank}" if trainer.world_size > 1 else str(key)
            target = batch.video[i] if batch.video is not None else None
            row = comparison_frames(batch.ref_image[i], batch.pose[i], generated[i], target)
            name = _free_name(out_dir, name)
            self.written.append(write_comparison_mp4(out_dir / f"{name}_compare.mp4", [row], self.fps))
            # The skeletons the model followed (aligned, when extracted from a video of a person).
            pose = to_uint8_frames(batch.pose[i].flip(0), (0.0, 1.0))  # release channel order -> RGB
            self.written.append(write_comparison_mp4(out_dir / f"{name}_pose.mp4", [pose], self.fps))
            self.written.append(
                write_comparison_mp4(out_dir / f"{name}.mp4", [to_uint8_frames(generated[i])], self.fps)
            )
            print(f"wrote {self.written[-1]} ({generated.shape[2]} frames)")


# What one prediction writes: <name>.mp4, <name>_compare.mp4, <name>_pose.mp4.
OUTPUT_SUFFIXES = ("", "_compare", "_pose")


def _free_name(out_dir: Path, name: str) -> str:
    """``name``, or ``name-N`` with the smallest N for which none of the output files exists yet."""
    candidate, n = name, 0
    while any((out_dir / f"{candidate}{suffix}.mp4").exists() for suffix in OUTPUT_SUFFIXES):
        n += 1
        candidate = f"{name}-{n}"
    return candidate
