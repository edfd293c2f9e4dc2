"""Keypoints extracted elsewhere: our npz/json, or the public release's per-frame ``pose`` dicts.

The release layout (``shared/fixtures/official_unianimate/README.md`` §6) is a JSON list with one
dict per frame: ``bodies.candidate`` (N, 2) and ``bodies.subset`` (1, 20) normalised, ``hands``
(2, 21, 2), ``faces`` (1, 68, 2), -1 marking dropped points. It carries no scores, so kept points
get score 1 and dropped ones 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from datamodules.format import PoseSequence
from datamodules.pose_render import pose_from_release_dict


def load_pose_file(path: str | Path) -> PoseSequence:
    """Read ``.npz`` (ours), ``.json`` (ours: body/hands/face) or ``.json`` (a list of release dicts)."""
    path = Path(path)
    if path.suffix == ".npz":
        return PoseSequence.from_npz_bytes(path.read_bytes())
    if path.suffix != ".json":
        raise ValueError(f"{path}: pose files are .npz or .json")
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "body" in data:
        return PoseSequence.from_json_bytes(path.read_bytes())
    frames = data if isinstance(data, list) else data.get("frames")
    if not frames or "bodies" not in frames[0]:
        raise ValueError(f"{path}: neither our layout (body/hands) nor a list of release pose dicts")
    poses = [pose_from_release_dict(frame) for frame in frames]
    return PoseSequence(
        np.concatenate([p.body for p in poses]).astype(np.float32),
        np.concatenate([p.hands for p in poses]).astype(np.float32),
        np.concatenate([p.face for p in poses]).astype(np.float32),
    )


class PrecomputedExtractor:
    """Serves the keypoints of one file, checking that they cover the frames given."""

    def __init__(self, path: str | Path) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"precomputed pose file not found: {path}")
        self.path = Path(path)

    def __call__(self, frames: np.ndarray, progress: bool = False) -> PoseSequence:
        pose = load_pose_file(self.path)
        if len(pose) != len(frames):
            raise ValueError(f"{self.path}: {len(pose)} pose frames for a video of {len(frames)} frames")
        return pose
