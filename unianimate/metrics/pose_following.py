"""Pose-following measures with exact ground truth (synthetic figures), per clip.

All take uint8 frames ``(f, H, W, 3)`` (and bool masks ``(f, H, W)``) and return one float:

- ``motion_psnr``: PSNR over the pixels where the ground truth differs from the reference frame by
  more than ``MOTION_LEVELS`` in some channel (the limbs that moved), pooled over the clip;
- ``mask_iou``: intersection over union of two figure masks, pooled over the clip;
- ``psnr``: the mean of the per-frame PSNRs (as :func:`unianimate.metrics.frame_metrics.psnr`);
- the pose-swap margin of a clip is ``psnr(generated, own truth) - psnr(generated, other truth)``.
"""

from __future__ import annotations

import numpy as np

MOTION_LEVELS = 40  # of 255: well above the autoencoder's error, below a limb's contrast


def _sq_error(generated: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(f, H, W, 3) uint8 x2 -> float64 (f, H, W, 3) squared error on [0, 1]."""
    if generated.shape != target.shape:
        raise ValueError(f"generated {generated.shape} and target {target.shape} differ")
    return np.square((generated.astype(np.float64) - target.astype(np.float64)) / 255.0)


def psnr(generated: np.ndarray, target: np.ndarray) -> float:
    """Mean over frames of the frame PSNR (data range 1)."""
    mse = _sq_error(generated, target).reshape(len(target), -1).mean(1)
    return float(np.mean(10.0 * np.log10(1.0 / mse)))


def motion_mask(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """target (f, H, W, 3), reference (H, W, 3) uint8 -> bool (f, H, W): the pixels that moved."""
    diff = np.abs(target.astype(np.int16) - reference.astype(np.int16)[None])
    return diff.max(axis=-1) > MOTION_LEVELS


def motion_psnr(generated: np.ndarray, target: np.ndarray, reference: np.ndarray) -> float:
    """PSNR over :func:`motion_mask` of the clip (NaN when nothing moved)."""
    mask = motion_mask(target, reference)
    if not mask.any():
        return float("nan")
    mse = _sq_error(generated, target)[mask].mean()
    return float(10.0 * np.log10(1.0 / mse))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (f, H, W) pooled over the clip (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def fraction_of_way(value: float, floor: float, ceiling: float) -> float:
    """Where ``value`` lies from ``floor`` (0) to ``ceiling`` (1)."""
    return (value - floor) / (ceiling - floor)
