"""``unianimate test``: the paper's metrics (SPEC §6) on held-out videos, as a callback.

The module's ``test_step`` returns the generated videos; this callback measures them against the
ground truth with the protocol of :mod:`unianimate.metrics.protocol`, beside two baselines on the
same clips (copy reference, autoencoder reconstruction: :mod:`unianimate.metrics.baselines`), gathers every rank's values,
and writes ``test_metrics.json`` / ``test_metrics.md`` to the run's log directory.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from callbacks.pose_following import PoseSwap, evaluate_pose_following, format_pose_rows
from unianimate import demo_cache
from unianimate.batch import VideoBatch
from unianimate.conditions import to_unit
from unianimate.metrics.baselines import BaselineMetrics, format_rows
from unianimate.metrics.protocol import EvalProtocol, VideoMetrics, write_json


class VideoEvaluation(L.Callback):
    """Measures ``unianimate test``.

    Args:
        protocol: what is measured (SPEC §6).
        random_metric_weights: a folder; LPIPS / I3D weights the protocol does not name are
            generated there with random weights (demo only: the results say so).
        pose_fidelity: also re-extract poses from the generated frames with this pose backend
            (``mediapipe``: the ``pose`` extra) and report PCK@0.05 of the image diagonal against
            the driving keypoints (``None``: off).
        pose_swap: also score pose-following on synthetic figures with exact ground truth
            (:mod:`callbacks.pose_following`: motion-region PSNR, figure IoU, pose-swap margin,
            beside copy reference and the autoencoder; ``None``: off). Synthetic data only.
    """

    def __init__(
        self,
        protocol: EvalProtocol | None = None,
        random_metric_weights: str | None = None,
        pose_fidelity: str | None = None,
        pose_swap: PoseSwap | None = None,
    ) -> None:
        self.protocol = protocol or EvalProtocol()
        self.random_metric_weights = random_metric_weights
        self.pose_fidelity = pose_fidelity
        self.pose_swap = pose_swap
        self.metrics: VideoMetrics | None = None
        self.pck_values: list[float] = []
        self.pose_extractor = None
        self.results: dict[str, Any] = {}

    def _protocol(self) -> EvalProtocol:
        protocol = self.protocol
        if self.random_metric_weights is None or (protocol.lpips_vgg and protocol.i3d):
            return protocol
        from unianimate.metrics.random_weights import make_tiny_metric_weights

        folder = demo_cache.resolve(self.random_metric_weights)  # not under the working directory
        paths = {k: str(v) for k, v in make_tiny_metric_weights(folder).items()}
        return replace(
            protocol,
            lpips_vgg=protocol.lpips_vgg or paths["lpips_vgg"],
            lpips_heads=protocol.lpips_heads or paths["lpips_heads"],
            i3d=protocol.i3d or paths["i3d"],
        )

    def on_test_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.metrics = VideoMetrics(self._protocol(), device=module.device)
        self.baselines = BaselineMetrics(self.metrics)  # copy reference, autoencoder reconstruction
        self.pck_values = []
        if self.pose_fidelity is not None:
            from datamodules.pose_extract import make_extractor  # the pose extra, only when asked

            self.pose_extractor = make_extractor(self.pose_fidelity)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: Tensor,
        batch: VideoBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.metrics.update(to_unit(outputs).clamp(0, 1), to_unit(batch.video).clamp(0, 1))
        self.baselines.update(batch, module.encoders, seed=module.hparams.seed + batch_idx)
        if self.pose_extractor is not None:
            self.pck_values += self._pose_fidelity(outputs, batch.keypoints)

    def _pose_fidelity(self, generated: Tensor, keypoints: Tensor) -> list[float]:
        """PCK per video: poses re-extracted from ``generated`` (b 3 f H W) vs the driving
        ``keypoints`` (b f 20 3, normalised to the clip's frame)."""
        from unianimate.metrics.pck import pck
        from unianimate.visualize import to_uint8_frames

        height, width = generated.shape[-2:]
        scale = np.array([width, height, 1.0])
        values = []
        for video, target in zip(generated, keypoints.cpu().numpy()):
            found = self.pose_extractor(to_uint8_frames(video)).body
            values.append(pck(found * scale, target * scale, image_size=(height, width)))
        return values

    def on_test_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each rank evaluated its own shards: gather everything, so every rank computes the
            # metrics of all the videos (FVD needs all the features together, not a mean of FVDs).
            gathered = [None] * torch.distributed.get_world_size()
            snapshot = (self.metrics.snapshot(), self.pck_values, self.baselines.snapshot())
            torch.distributed.all_gather_object(gathered, snapshot)
            self.metrics.merge([snap for snap, _, _ in gathered])
            self.pck_values = [v for _, values, _ in gathered for v in values]
            self.baselines.merge([snap for _, _, snap in gathered])
        results = self.metrics.compute()
        baselines = self.baselines.compute()
        if self.pose_extractor is not None:
            # Videos where no keypoint was found in both count as NaN and are left out of the mean.
            found = [v for v in self.pck_values if v == v]
            results["pck"] = float(np.mean(found)) if found else float("nan")
            results["pck_videos"] = len(found)
        self.results = results
        for name, value in results.items():
            if isinstance(value, float | int):  # the same on every rank: nothing to reduce
                module.log(f"test/{name}", float(value), sync_dist=False, rank_zero_only=True)
        for baseline, values in baselines.items():
            for name in ("l1", "psnr", "ssim"):
                module.log(
                    f"test_{baseline}/{name}", float(values[name]), sync_dist=False, rank_zero_only=True
                )
        out_dir = Path(trainer.log_dir or trainer.default_root_dir)  # collective: every rank asks
        if not trainer.is_global_zero:
            return
        record, table = {**results, "baselines": baselines}, format_rows(results, baselines)
        if self.pose_swap is not None:
            # Rank 0 alone: the same few clips on every rank would only repeat the work.
            rows = evaluate_pose_following(
                module, trainer.datamodule.test_example, self.pose_swap, module.hparams.seed
            )
            for name, value in rows["model"].items():
                module.log(f"test_pose/{name}", value, sync_dist=False, rank_zero_only=True)
            self.results["pose_following"] = record["pose_following"] = rows
            table += "\n\n" + format_pose_rows(rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(record, out_dir / "test_metrics.json")
        (out_dir / "test_metrics.md").write_text(table + "\n")
        print(f"\n{table}\nwrote {out_dir / 'test_metrics.json'} and {out_dir / 'test_metrics.md'}")
