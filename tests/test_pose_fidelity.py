"""Pose fidelity in `unianimate test`: poses found in generated frames vs the driving keypoints."""

from __future__ import annotations

import numpy as np
import torch

from callbacks.video_evaluation import VideoEvaluation
from datamodules.format import PoseSequence


class Replay:
    """A stand-in pose extractor that 'finds' given bodies, one video per call."""

    def __init__(self, bodies: list[np.ndarray]) -> None:
        self.bodies = iter(bodies)
        self.frames_seen: list[tuple] = []

    def __call__(self, frames: np.ndarray) -> PoseSequence:
        self.frames_seen.append(frames.shape)
        body = next(self.bodies)
        return PoseSequence(body, np.zeros((len(body), 2, 21, 3), np.float32))


def test_pck_against_driving_keypoints():
    evaluation = VideoEvaluation(pose_fidelity=None)
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(0.2, 0.8, (2, 3, 20, 3)).astype(np.float32)
    keypoints[..., 2] = 1.0
    generated = torch.zeros(2, 3, 3, 64, 48)
    exact, far = keypoints.copy(), keypoints.copy()
    far[..., 0] += 0.5  # half the width away: beyond 5% of the diagonal
    evaluation.pose_extractor = Replay([exact[0], far[1]])
    values = evaluation._pose_fidelity(generated, torch.from_numpy(keypoints))
    assert values == [1.0, 0.0]
    assert evaluation.pose_extractor.frames_seen == [(3, 64, 48, 3)] * 2  # uint8 frames, channels last
