"""Pose-following on synthetic figures, with exact ground truth (``unianimate test``, the study).

Held-out identities are each driven by two motions from a reference frame in a third pose
(:func:`datamodules.synthetic.pose_swap_cases`); the model's clips, copying the reference (the
floor) and the autoencoder's reconstruction of the ground truth (the ceiling) are scored with PSNR,
motion-region PSNR, figure IoU and the pose-swap margin (:mod:`unianimate.metrics.pose_following`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch

from datamodules.clips import ClipExample
from datamodules.synthetic import PoseSwapCase, figure_mask, pose_swap_cases
from datamodules.video_datamodule import collate, to_float
from unianimate.metrics import pose_following as pf
from unianimate.visualize import to_uint8_frames

ROWS = ("model", "copy reference", "autoencoder reconstruction of the ground truth")
MEASURES = ("psnr", "motion_psnr", "figure_iou", "swap_margin")


@dataclass
class PoseSwap:
    """Which held-out synthetic clips ``unianimate test`` scores for pose-following.

    Args:
        identities: held-out identities (the demo trains on 0 .. 255 and validates on 10_000 ..
            10_007; the demo autoencoder was trained on 20_000 .. 20_399).
        num_frames: frames per motion.
        seed: picks the motions and the reference poses.
    """

    identities: list[int] = field(default_factory=lambda: list(range(30_000, 30_008)))
    num_frames: int = 16
    seed: int = 0


def _score(clips: list[np.ndarray], case: PoseSwapCase) -> dict[str, list[float]]:
    """Two clips (one per motion of ``case``) -> per-clip values of every measure."""
    out: dict[str, list[float]] = {name: [] for name in MEASURES}
    for k, clip in enumerate(clips):
        truth, other = case.frames[k], case.frames[1 - k]
        out["psnr"].append(pf.psnr(clip, truth))
        out["motion_psnr"].append(pf.motion_psnr(clip, truth, case.reference))
        out["figure_iou"].append(
            pf.mask_iou(figure_mask(case.identity, clip), figure_mask(case.identity, truth))
        )
        out["swap_margin"].append(pf.psnr(clip, truth) - pf.psnr(clip, other))
    return out


@torch.no_grad()
def evaluate_pose_following(
    module: L.LightningModule, example: ClipExample, protocol: PoseSwap, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``module`` (a ``UniAnimateModule``) animates every case; -> row -> measure -> value
    (means over clips; ``swap_margin_min`` the worst clip)."""
    cases = pose_swap_cases(
        protocol.identities, protocol.num_frames, example.height, example.width, protocol.seed
    )
    values = {row: {name: [] for name in MEASURES} for row in ROWS}
    for n, case in enumerate(cases):
        items = [
            {
                "pose": example.render(pose),
                "ref_pose": example.render(case.reference_pose)[0],
                "ref_image": torch.from_numpy(case.reference),
                "video": torch.from_numpy(frames),
            }
            for frames, pose in zip(case.frames, case.poses)
        ]
        batch = to_float(collate(items)).to(module.device)
        generated = module.generate(batch, seed=seed + n)
        generator = torch.Generator(device=module.device).manual_seed(seed + n)
        reconstruction = module.encoders.decode_video(module.encoders.encode_video(batch.video, generator))
        clips = {
            ROWS[0]: [to_uint8_frames(v) for v in generated],
            ROWS[1]: [np.repeat(case.reference[None], len(case.frames[0]), axis=0)] * 2,
            ROWS[2]: [to_uint8_frames(v) for v in reconstruction],
        }
        for row, row_clips in clips.items():
            for name, clip_values in _score(row_clips, case).items():
                values[row][name] += clip_values
    results = {}
    for row, measures in values.items():
        results[row] = {name: float(np.nanmean(v)) for name, v in measures.items()}
        results[row]["swap_margin_min"] = float(np.min(measures["swap_margin"]))
    return results


def format_pose_rows(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of :func:`evaluate_pose_following`, and how far the model is from copying
    the reference (0 %) to the autoencoder (100 %)."""
    lines = [
        "| pose-following | PSNR ↑ | motion-region PSNR ↑ | figure IoU ↑ | pose-swap margin dB (mean / min) ↑ |",
        "|---|---|---|---|---|",
    ]
    for row, r in results.items():
        lines.append(
            f"| {row} | {r['psnr']:.2f} | {r['motion_psnr']:.2f} | {r['figure_iou']:.3f} "
            f"| {r['swap_margin']:.2f} / {r['swap_margin_min']:.2f} |"
        )
    floor, ceiling = results[ROWS[1]], results[ROWS[2]]
    way = {
        name: 100 * pf.fraction_of_way(results[ROWS[0]][name], floor[name], ceiling[name])
        for name in ("psnr", "motion_psnr", "figure_iou")
    }
    lines.append(
        "model, from copy reference (0 %) to the autoencoder (100 %): "
        f"PSNR {way['psnr']:.0f} %, motion-region PSNR {way['motion_psnr']:.0f} %, figure IoU {way['figure_iou']:.0f} %"
    )
    return "\n".join(lines)
