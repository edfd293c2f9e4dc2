"""Keypoint extraction for videos, with the backend chosen explicitly (SPEC §5).

- ``dwpose``: the method's extractor (YOLOX-L + DW-LL 384, ONNX on onnxruntime); kwargs
  ``detector``, ``pose_model`` (local .onnx paths), ``providers``.
- ``mediapipe``: MediaPipe Holistic from the 0.10.21 wheel, offline; kwargs
  ``min_detection_confidence``, ``min_tracking_confidence``. Needs the ``pose`` extra (numpy<2).
- ``precomputed``: keypoints made elsewhere; kwarg ``path`` (.npz / .json, ours or the release's).

Every backend returns :class:`datamodules.format.PoseSequence` (normalised coordinates, score 0 =
missing). A missing backend dependency raises ImportError with the install command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from datamodules.format import PoseSequence

PoseBackend = Literal["dwpose", "mediapipe", "precomputed"]
Extractor = Callable[..., PoseSequence]


def make_extractor(backend: PoseBackend, **backend_kwargs: Any) -> Extractor:
    """Build a reusable extractor: ``extractor(frames, progress=False) -> PoseSequence``."""
    if backend == "dwpose":
        from datamodules.pose_backends.dwpose import DWPoseExtractor

        return DWPoseExtractor(**backend_kwargs)
    if backend == "mediapipe":
        from datamodules.pose_backends.mediapipe_pose import MediaPipeExtractor

        return MediaPipeExtractor(**backend_kwargs)
    if backend == "precomputed":
        from datamodules.pose_backends.precomputed import PrecomputedExtractor

        return PrecomputedExtractor(**backend_kwargs)
    raise ValueError(f"unknown pose backend {backend!r}: choose dwpose, mediapipe or precomputed")


def extract_poses(
    frames: np.ndarray, backend: PoseBackend, progress: bool = False, **backend_kwargs: Any
) -> PoseSequence:
    """frames (f, H, W, 3) uint8 RGB -> keypoints of one person, f frames."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (f, H, W, 3), got {frames.dtype} {frames.shape}")
    return make_extractor(backend, **backend_kwargs)(frames, progress=progress)
