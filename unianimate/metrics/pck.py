"""Pose fidelity: PCK between keypoints re-extracted from generated frames and the driving keypoints.

A keypoint is correct when its distance to the driving keypoint is at most ``threshold`` times a
reference length: the image diagonal (``reference="diagonal"``, needs ``image_size``) or the torso
of the driving pose in that frame (``reference="torso"``: neck to mid-hip, OpenPose-18 indices 1,
8 and 11, the body layout this project draws). Only keypoints visible in both poses count, where
visible means confidence above ``min_confidence``. Keypoints are (x, y, confidence) in pixels.
"""

from typing import Literal

import numpy as np

NECK, RIGHT_HIP, LEFT_HIP = 1, 8, 11  # OpenPose-18 body indices


def pck(
    pred: np.ndarray,
    target: np.ndarray,
    threshold: float = 0.05,
    reference: Literal["diagonal", "torso"] = "diagonal",
    image_size: tuple[int, int] | None = None,
    min_confidence: float = 0.3,
) -> float:
    """pred, target: (f, K, 3) as (x, y, confidence) -> fraction of correct keypoints in [0, 1].

    ``image_size`` is (H, W), required for ``reference="diagonal"``. Frames whose driving torso is
    not visible are skipped under ``reference="torso"``. Returns NaN when no keypoint is visible in
    both (the caller decides whether such a video counts).
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(
            f"expected two (f, K, 3) arrays of the same shape, got {pred.shape} and {target.shape}"
        )
    visible = (pred[..., 2] > min_confidence) & (target[..., 2] > min_confidence)
    dist = np.linalg.norm(pred[..., :2] - target[..., :2], axis=-1)  # (f, K)
    if reference == "diagonal":
        if image_size is None:
            raise ValueError("reference='diagonal' needs image_size=(H, W)")
        ref = np.full(pred.shape[0], float(np.hypot(*image_size)))
    elif reference == "torso":
        conf = target[:, [NECK, RIGHT_HIP, LEFT_HIP], 2]
        mid_hip = (target[:, RIGHT_HIP, :2] + target[:, LEFT_HIP, :2]) / 2
        ref = np.linalg.norm(target[:, NECK, :2] - mid_hip, axis=-1)
        torso_ok = (conf > min_confidence).all(axis=1) & (ref > 0)
        visible &= torso_ok[:, None]
        ref = np.where(torso_ok, ref, 1.0)
    else:
        raise ValueError(f"reference must be 'diagonal' or 'torso', got {reference!r}")
    if not visible.any():
        return float("nan")
    correct = dist <= threshold * ref[:, None]
    return float(correct[visible].mean())
