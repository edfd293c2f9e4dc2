"""MediaPipe Holistic (BlazePose body + hand landmarks) mapped to our keypoint layout.

Offline by construction: mediapipe 0.10.21 ships ``pose_landmark_full.tflite`` (model complexity
1), the hand models and ``hand_recrop.tflite`` inside its wheel, so the legacy
``mp.solutions.holistic`` graph runs without a download (complexity 0 and 2 would download).
Holistic's hands are found from the pose's wrists, so "left" is the person's left hand, as in
COCO-WholeBody. Its 468-point face mesh has no 68-point equivalent, so ``face`` is None.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from datamodules.format import BODY_POINTS, HAND_POINTS, PoseSequence

INSTALL_HINT = (
    "the mediapipe pose backend needs the pose extra: pip install -e '.[pose]' "
    "(mediapipe==0.10.21 requires numpy<2 and protobuf<5: use a separate virtual environment)"
)

# OpenPose-18 index -> BlazePose-33 index (neck, OpenPose 1, is the mean of the shoulders 11, 12).
OPENPOSE_FROM_BLAZEPOSE = {
    0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
    11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7,
    18: 31, 19: 32,  # toes: left / right foot index
}  # fmt: skip


def blazepose_to_body(landmarks: np.ndarray) -> np.ndarray:
    """BlazePose (..., 33, 3) = x, y, visibility (normalised) -> our body (..., 20, 3).

    Neck = mean of the shoulders with the smaller of their two scores. Points MediaPipe places
    outside the frame are extrapolations, so they get score 0.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32)
    body = np.zeros((*landmarks.shape[:-2], BODY_POINTS, 3), dtype=np.float32)
    for ours, theirs in OPENPOSE_FROM_BLAZEPOSE.items():
        body[..., ours, :] = landmarks[..., theirs, :]
    shoulders = landmarks[..., [11, 12], :]
    body[..., 1, :2] = shoulders[..., :2].mean(axis=-2)
    body[..., 1, 2] = shoulders[..., 2].min(axis=-1)
    _zero_outside(body)
    return body


def _zero_outside(points: np.ndarray) -> None:
    xy = points[..., :2]
    outside = np.any((xy < 0) | (xy > 1), axis=-1)
    points[..., 2] = np.where(outside, 0.0, np.clip(points[..., 2], 0.0, 1.0))


def _landmark_array(landmarks, with_visibility: bool) -> np.ndarray:
    return np.array(
        [(p.x, p.y, p.visibility if with_visibility else 1.0) for p in landmarks.landmark], dtype=np.float32
    )


class MediaPipeExtractor:
    """Runs MediaPipe Holistic frame by frame in video (tracking) mode, a fresh graph per video."""

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        try:
            import mediapipe
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        self._holistic = mediapipe.solutions.holistic.Holistic
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence

    def __call__(self, frames: np.ndarray, progress: bool = False) -> PoseSequence:
        """frames (f, H, W, 3) uint8 RGB -> keypoints of the one person MediaPipe tracks."""
        f = len(frames)
        body = np.zeros((f, BODY_POINTS, 3), dtype=np.float32)
        hands = np.zeros((f, 2, HAND_POINTS, 3), dtype=np.float32)
        with self._holistic(
            static_image_mode=False,
            model_complexity=1,  # the only pose model inside the 0.10.21 wheel
            refine_face_landmarks=False,
            min_detection_confidence=self.min_detection_confidence,
            min_tracking_confidence=self.min_tracking_confidence,
        ) as model:
            for i, frame in enumerate(tqdm(frames, desc="mediapipe", disable=not progress)):
                result = model.process(np.ascontiguousarray(frame))
                if result.pose_landmarks is not None:
                    body[i] = blazepose_to_body(_landmark_array(result.pose_landmarks, True))
                for side, hand in enumerate((result.left_hand_landmarks, result.right_hand_landmarks)):
                    if hand is not None:
                        hands[i, side] = _landmark_array(hand, False)
        _zero_outside(hands)
        return PoseSequence(body, hands)
