"""Pose alignment (SPEC §5) and the bone-length jitter augmentation, against known answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules.format import PoseSequence
from datamodules.pose_align import BONES, L_SHO, NECK, R_HIP, R_SHO, align_pose, random_pose_jitter
from datamodules.synthetic import make_synthetic_video

REPO = Path(__file__).resolve().parents[1]
R_ELB = 3


def _points(pose: PoseSequence) -> np.ndarray:
    """(f, 62, 3) float64, body then hands, the same flattening as the module's tree."""
    return np.concatenate([pose.body, pose.hands.reshape(len(pose), 42, 3)], axis=1).astype(np.float64)


def _lengths(points: np.ndarray) -> np.ndarray:
    parents, children = np.array(BONES).T
    return np.linalg.norm(points[:, children, :2] - points[:, parents, :2], axis=-1)


def _both_visible(points: np.ndarray) -> np.ndarray:
    parents, children = np.array(BONES).T
    return (points[:, children, 2] > 0.3) & (points[:, parents, 2] > 0.3)


def _synthetic(identity: int, frames: int, seed: int) -> PoseSequence:
    return make_synthetic_video(identity, frames, 64, 48, seed)[1]


def test_bone_lengths_and_neck_match_the_reference() -> None:
    reference, driving = _synthetic(0, 1, 0), _synthetic(7, 12, 3)
    assert np.all(reference.body[..., 2] == 1)
    aligned = align_pose(reference, driving)
    got, want = _points(aligned), _points(reference)
    np.testing.assert_allclose(got[0, NECK, :2], want[0, NECK, :2], atol=1e-6)
    visible = _both_visible(_points(driving))
    assert visible.mean() > 0.5
    target = np.broadcast_to(_lengths(want), (12, len(BONES)))
    np.testing.assert_allclose(_lengths(got)[visible], target[visible], atol=2e-6)
    np.testing.assert_array_equal(got[..., 2], _points(driving)[..., 2])
    # Directions are those of the driving pose after the x/y proportion scaling.
    d, r = _points(driving)[0], want[0]
    sx = np.linalg.norm(r[R_SHO, :2] - r[L_SHO, :2]) / np.linalg.norm(d[R_SHO, :2] - d[L_SHO, :2])
    height = lambda p: np.linalg.norm((p[R_SHO, :2] + p[L_SHO, :2]) / 2 - (p[R_HIP, :2] + p[11, :2]) / 2)  # noqa: E731
    sy = height(r) / height(d)
    parents, children = np.array(BONES).T
    expected = (_points(driving)[:, children, :2] - _points(driving)[:, parents, :2]) * [sx, sy]
    actual = got[:, children, :2] - got[:, parents, :2]
    cos = (expected * actual).sum(-1) / (
        np.linalg.norm(expected, axis=-1) * np.linalg.norm(actual, axis=-1) + 1e-12
    )
    nonzero = np.linalg.norm(expected, axis=-1) > 1e-6
    assert np.all(cos[nonzero] > 1 - 1e-6)
    # Global motion survives: later necks move as in the driving video (scaled), not pinned.
    drv_neck = _points(driving)[:, NECK, :2]
    np.testing.assert_allclose(
        got[:, NECK, :2] - got[0, NECK, :2], (drv_neck - drv_neck[0]) * [sx, sy], atol=1e-6
    )


def test_uniformly_scaled_copy_aligns_onto_the_reference() -> None:
    reference = _synthetic(2, 1, 5)
    body, hands = reference.body.copy(), reference.hands.copy()
    body[..., :2] = body[..., :2] * 0.6 + [0.3, 0.1]
    hands[..., :2] = hands[..., :2] * 0.6 + [0.3, 0.1]
    aligned = align_pose(reference, PoseSequence(body, hands))
    np.testing.assert_allclose(_points(aligned), _points(reference), atol=2e-6)


def test_frame_sizes_are_respected() -> None:
    """The same pixel skeleton, smaller, in a frame of another shape, must land on the reference."""
    reference = _synthetic(4, 1, 1)  # normalised in a 64 x 48 frame
    px = _points(reference)[..., :2] * [48, 64]
    moved = (px * 0.7 + [20, 5]) / [200, 100]  # a 100 x 200 frame
    points = _points(reference).copy()
    points[..., :2] = moved
    driving = PoseSequence(
        points[:, :20].astype(np.float32), points[:, 20:].reshape(1, 2, 21, 3).astype(np.float32)
    )
    aligned = align_pose(reference, driving, reference_hw=(64, 48), driving_hw=(100, 200))
    np.testing.assert_allclose(_points(aligned), _points(reference), atol=2e-6)
    # Without the sizes the result is different (the frames are not square).
    assert np.abs(_points(align_pose(reference, driving)) - _points(reference)).max() > 1e-4


def test_missing_required_points_raise() -> None:
    reference, driving = _synthetic(0, 1, 0), _synthetic(1, 4, 0)
    broken = PoseSequence(reference.body.copy(), reference.hands)
    broken.body[0, L_SHO, 2] = 0.0
    with pytest.raises(ValueError, match="reference pose: the left shoulder is missing"):
        align_pose(broken, driving)
    broken = PoseSequence(driving.body.copy(), driving.hands)
    broken.body[0, NECK, 2] = 0.1
    with pytest.raises(ValueError, match="driving pose: the neck is missing"):
        align_pose(reference, broken)


def test_missing_points_in_later_frames_stay_finite() -> None:
    reference, driving = _synthetic(0, 1, 0), _synthetic(3, 6, 2)
    body = driving.body.copy()
    body[2:, R_ELB, 2] = 0.0  # elbow lost: the wrist and hand follow the shoulder
    hands = driving.hands.copy()
    hands[4, 1, :, 2] = 0.0
    aligned = align_pose(reference, PoseSequence(body, hands))
    assert np.all(np.isfinite(aligned.body)) and np.all(np.isfinite(aligned.hands))
    assert aligned.body[3, R_ELB, 2] == 0.0 and aligned.hands[4, 1, 5, 2] == 0.0
    # A reference that lacks a bone (an ear) keeps the driving bone's scaled length instead of failing.
    ref_body = reference.body.copy()
    ref_body[0, 17, 2] = 0.0
    assert np.all(np.isfinite(align_pose(PoseSequence(ref_body, reference.hands), driving).body))


def test_jitter_is_consistent_over_the_clip() -> None:
    pose = _synthetic(6, 10, 4)
    jittered = random_pose_jitter(pose, np.random.default_rng(0), bone_scale=0.2, scale=0.0, shift=0.0)
    valid = (_lengths(_points(pose)) > 1e-4) & _both_visible(_points(pose))
    ratio = _lengths(_points(jittered)) / np.where(valid, _lengths(_points(pose)), 1.0)
    for b in range(len(BONES)):
        column = ratio[valid[:, b], b]
        if column.size == 0:  # the wrist -> hand-wrist bone has length 0 in the synthetic figures
            continue
        assert np.ptp(column) < 1e-4, "a bone must get the same factor in every frame"
        assert 0.8 - 1e-4 <= column[0] <= 1.2 + 1e-4
    assert np.std(ratio[0][valid[0]]) > 0.02, "bones get different factors"
    np.testing.assert_array_equal(jittered.body[..., 2], pose.body[..., 2])
    # The whole-pose scale and shift are the same for all frames too.
    moved = random_pose_jitter(pose, np.random.default_rng(1), bone_scale=0.0, scale=0.1, shift=0.05)
    before, after = _points(pose)[..., :2], _points(moved)[..., :2]
    k = np.linalg.lstsq(
        np.c_[before.reshape(-1, 2)[:, :1], np.ones(before.size // 2)], after.reshape(-1, 2)[:, :1]
    )
    assert k[1][0] < 1e-8 and 0.9 <= k[0][0, 0] <= 1.1
    same = random_pose_jitter(pose, np.random.default_rng(1), bone_scale=0.0, scale=0.1, shift=0.05)
    np.testing.assert_array_equal(same.body, moved.body)
    identity = random_pose_jitter(pose, np.random.default_rng(2), bone_scale=0.0, scale=0.0, shift=0.0)
    np.testing.assert_allclose(identity.body, pose.body, atol=1e-7)


def test_align_pose_tool(tmp_path: Path) -> None:
    reference, driving = _synthetic(0, 1, 0), _synthetic(9, 5, 1)
    (tmp_path / "ref.pose.npz").write_bytes(reference.to_npz_bytes())
    (tmp_path / "drv.pose.npz").write_bytes(driving.to_npz_bytes())
    out = tmp_path / "aligned.pose.npz"
    args = [str(tmp_path / "ref.pose.npz"), str(tmp_path / "drv.pose.npz"), str(out)]
    subprocess.run([sys.executable, str(REPO / "tools" / "align_pose.py"), *args], check=True, cwd=REPO)
    aligned = PoseSequence.from_npz_bytes(out.read_bytes())
    np.testing.assert_allclose(aligned.body, align_pose(reference, driving).body)
