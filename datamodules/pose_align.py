"""Pose alignment for driving someone else's motion (SPEC §5), and a bone-length jitter augmentation.

Both work on the kinematic tree of :class:`datamodules.format.PoseSequence`: the OpenPose-18
skeleton rooted at the neck, the toes below the ankles, and each 21-point hand hanging from its
body wrist (hand 0, the left, from the left wrist). Rescaling a bone moves the child and all its
descendants, so directions are kept and only lengths change.
"""

from __future__ import annotations

import numpy as np

from datamodules.format import BODY_POINTS, HAND_POINTS, PoseSequence

BODY_NAMES = (
    "nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
    "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
    "right eye", "left eye", "right ear", "left ear", "left toe", "right toe",
)  # fmt: skip
NOSE, NECK, R_SHO, L_SHO, R_HIP, L_HIP, R_WRI, L_WRI = 0, 1, 2, 5, 8, 11, 4, 7
_BODY_PARENTS = (1, -1, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15, 13, 10)
_NUM_POINTS = BODY_POINTS + 2 * HAND_POINTS  # body then left hand then right hand, flattened


def _hand_parent(k: int, wrist: int, offset: int) -> int:
    if k == 0:
        return wrist
    return offset if k % 4 == 1 else offset + k - 1  # each finger is a chain of 4 from the hand's wrist


PARENTS = _BODY_PARENTS + tuple(
    _hand_parent(k, wrist, BODY_POINTS + h * HAND_POINTS)
    for h, wrist in ((0, L_WRI), (1, R_WRI))
    for k in range(21)
)


def _bones_in_order() -> list[tuple[int, int]]:
    """(parent, child) pairs, every parent before its children."""
    order, frontier = [], [NECK]
    while frontier:
        parent = frontier.pop(0)
        children = [c for c, p in enumerate(PARENTS) if p == parent]
        order += [(parent, c) for c in children]
        frontier += children
    return order


BONES = _bones_in_order()


def point_name(index: int) -> str:
    if index < BODY_POINTS:
        return BODY_NAMES[index]
    hand, k = divmod(index - BODY_POINTS, HAND_POINTS)
    return f"{('left', 'right')[hand]} hand point {k}"


def _flatten(pose: PoseSequence) -> np.ndarray:
    """(f, 62, 3): body then both hands."""
    f = len(pose)
    return np.concatenate([pose.body, pose.hands.reshape(f, 2 * HAND_POINTS, 3)], axis=1).astype(np.float64)


def _unflatten(points: np.ndarray, face: np.ndarray | None) -> PoseSequence:
    f = points.shape[0]
    body = points[:, :BODY_POINTS].astype(np.float32)
    hands = points[:, BODY_POINTS:].reshape(f, 2, HAND_POINTS, 3).astype(np.float32)
    return PoseSequence(body, hands, None if face is None else face.astype(np.float32))


def _rescale_bones(xy: np.ndarray, visible: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Set every bone of xy (f, N, 2) to ``lengths`` (f, N_bones), NaN = keep, moving descendants.

    A point that is not visible in a frame has no direction to keep: it and its subtree move with
    its parent. Returns the new positions and each point's displacement (f, N, 2).
    """
    new = xy.copy()
    shift = np.zeros_like(xy)
    for b, (parent, child) in enumerate(BONES):
        bone = xy[:, child] - xy[:, parent]
        norm = np.linalg.norm(bone, axis=-1, keepdims=True)
        target = lengths[:, b : b + 1]
        usable = visible[:, child, None] & visible[:, parent, None] & ~np.isnan(target)
        safe = np.where(norm > 0, norm, 1.0)
        rescaled = new[:, parent] + np.where(norm > 0, bone / safe, 0.0) * np.nan_to_num(target)
        new[:, child] = np.where(usable, rescaled, xy[:, child] + shift[:, parent])
        shift[:, child] = new[:, child] - xy[:, child]
    return new, shift


def _bone_lengths(xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(f, N_bones) lengths, NaN where an end point is not visible."""
    parents, children = np.array(BONES).T
    lengths = np.linalg.norm(xy[:, children] - xy[:, parents], axis=-1)
    return np.where(visible[:, children] & visible[:, parents], lengths, np.nan)


def _require(points: np.ndarray, visible: np.ndarray, indices: tuple[int, ...], what: str) -> None:
    for i in indices:
        if not visible[0, i]:
            raise ValueError(
                f"{what} pose: the {point_name(i)} is missing in the first frame (score "
                f"{points[0, i, 2]:.2f}); pose alignment needs both shoulders, both hips and the neck"
            )


def align_pose(
    reference: PoseSequence,
    driving: PoseSequence,
    *,
    reference_hw: tuple[int, int] | None = None,
    driving_hw: tuple[int, int] | None = None,
    threshold: float = 0.3,
) -> PoseSequence:
    """Retarget ``driving`` onto the skeleton of ``reference`` (its first frame); SPEC §5.

    1. Scale x by the ratio of shoulder widths and y by the ratio of shoulder-centre to hip-centre
       heights (reference / driving, both from the first frames), about the driving neck.
    2. Set every bone, frame by frame, to the reference's length, keeping its direction and moving
       the child's subtree. Bones the reference lacks keep their scaled length.
    3. Translate all frames so that the first frame's neck lands on the reference's neck.
    The result is in the reference's normalised coordinates. ``*_hw`` are the (H, W) of the frames
    the keypoints were normalised by, so lengths are measured in pixels; by default both frames
    are taken as square. Points with score <= ``threshold`` are missing; they keep their score.
    """
    ref, drv = _flatten(reference), _flatten(driving)
    ref_px = np.array([1.0, 1.0]) if reference_hw is None else np.array(reference_hw[::-1], float)
    drv_px = np.array([1.0, 1.0]) if driving_hw is None else np.array(driving_hw[::-1], float)
    ref_xy, drv_xy = ref[..., :2] * ref_px, drv[..., :2] * drv_px
    ref_vis, drv_vis = ref[..., 2] > threshold, drv[..., 2] > threshold
    required = (NECK, R_SHO, L_SHO, R_HIP, L_HIP)
    _require(ref, ref_vis, required, "reference")
    _require(drv, drv_vis, required, "driving")

    def proportions(xy: np.ndarray) -> tuple[float, float]:
        width = np.linalg.norm(xy[0, R_SHO] - xy[0, L_SHO])
        height = np.linalg.norm((xy[0, R_SHO] + xy[0, L_SHO]) / 2 - (xy[0, R_HIP] + xy[0, L_HIP]) / 2)
        return width, height

    (ref_w, ref_h), (drv_w, drv_h) = proportions(ref_xy), proportions(drv_xy)
    if drv_w == 0 or drv_h == 0:
        raise ValueError("driving pose: shoulders coincide or shoulders and hips are at the same height")
    origin = drv_xy[0, NECK]
    scaled = origin + (drv_xy - origin) * np.array([ref_w / drv_w, ref_h / drv_h])

    lengths = np.broadcast_to(_bone_lengths(ref_xy[:1], ref_vis[:1]), (len(driving), len(BONES)))
    aligned, shift = _rescale_bones(scaled, drv_vis, lengths)
    offset = ref_xy[0, NECK] - aligned[0, NECK]
    drv[..., :2] = (aligned + offset) / ref_px
    face = None
    if driving.face is not None:  # the face moves rigidly with the nose
        face = driving.face.astype(np.float64).copy()
        face_xy = origin + (face[..., :2] * drv_px - origin) * np.array([ref_w / drv_w, ref_h / drv_h])
        face[..., :2] = (face_xy + shift[:, NOSE, None] + offset) / ref_px
    return _unflatten(drv, face)


def random_pose_jitter(
    pose: PoseSequence,
    rng: np.random.Generator,
    bone_scale: float = 0.1,
    scale: float = 0.1,
    shift: float = 0.05,
    threshold: float = 0.3,
) -> PoseSequence:
    """Training augmentation: the same random body shape change for every frame of a clip.

    Each body bone's length is multiplied by a factor in [1 - bone_scale, 1 + bone_scale] (one
    factor per hand), then the whole pose is scaled by a factor in [1 - scale, 1 + scale] about
    the first frame's neck and shifted by up to ``shift`` (in normalised units) in x and y.
    """
    points = _flatten(pose)
    xy, visible = points[..., :2], points[..., 2] > threshold
    factors = np.empty(len(BONES))
    hand_factors = rng.uniform(1 - bone_scale, 1 + bone_scale, size=2)
    for b, (_, child) in enumerate(BONES):
        if child < BODY_POINTS:
            factors[b] = rng.uniform(1 - bone_scale, 1 + bone_scale)
        else:
            factors[b] = hand_factors[(child - BODY_POINTS) // HAND_POINTS]
    lengths = _bone_lengths(xy, visible) * factors
    new, moved = _rescale_bones(xy, visible, lengths)
    origin = xy[0, NECK]
    global_scale = rng.uniform(1 - scale, 1 + scale)
    offset = rng.uniform(-shift, shift, size=2)
    points[..., :2] = origin + (new - origin) * global_scale + offset
    face = None
    if pose.face is not None:
        face = pose.face.astype(np.float64).copy()
        face[..., :2] = origin + (face[..., :2] + moved[:, NOSE, None] - origin) * global_scale + offset
    return _unflatten(points, face)
