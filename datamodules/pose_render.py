"""Skeleton pictures in the look of the public UniAnimate release (SPEC §5).

The drawing follows the release's DWPose drawing as described in
``shared/fixtures/official_unianimate/README.md`` §6, which pins it pixel for pixel: body limbs
as filled rotated ellipses, the canvas dimmed to 0.6 (truncated), body dots, then hand edges in
HSV colours and blue hand dots, all without anti-aliasing. The released weights saw these pictures
with red and blue swapped (written by OpenCV as BGR, read back by PIL as RGB), hence
``release_channel_order``.

Keypoints are in the layout of :class:`datamodules.format.PoseSequence`: body (20, 3) = the 18
OpenPose points, then left toe and right toe; hands (2, 21, 3), index 0 the left hand.
"""

from __future__ import annotations

import colorsys
import math
from typing import Literal, NamedTuple

import cv2
import numpy as np
import torch
from einops import rearrange

from datamodules.format import BODY_POINTS, FACE_POINTS, HAND_POINTS, PoseSequence

# OpenPose-18 limbs (0-based), then ankle -> toe for left (13 -> 18) and right (10 -> 19).
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19),
)  # fmt: skip
# Limb i and body dot i share colour i (RGB triples as written in the release's drawing code).
BODY_COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
    (170, 255, 255), (255, 255, 0),
)  # fmt: skip
HAND_EDGES = tuple((0 if i % 4 == 0 else i, i + 1) for i in range(20))  # wrist -> 4 joints per finger
# Edge e is coloured HSV(e / 20, 1, 1) * 255 as floats; OpenCV rounds them when drawing.
HAND_EDGE_COLOURS = tuple(tuple(255.0 * c for c in colorsys.hsv_to_rgb(e / 20, 1.0, 1.0)) for e in range(20))
HAND_DOT_COLOUR = (0, 0, 255)
FACE_DOT_COLOUR = (255, 255, 255)
LIMB_HALF_WIDTH = 4
DOT_RADIUS = 4
FACE_DOT_RADIUS = 3
RELEASE_SIDE = 512  # the smaller side of the release's 768x512 pictures, where its sizes are in pixels
PoseStyle = Literal["release", "proportional"]


class StrokeSizes(NamedTuple):
    """Pixel sizes of a skeleton picture's strokes."""

    limb_half_width: int
    dot_radius: int
    hand_line: int
    hand_dot_radius: int
    face_dot_radius: int


def stroke_sizes(height: int, width: int, style: PoseStyle = "release") -> StrokeSizes:
    """``release``: the release's absolute sizes at any picture size (bit-exact with its pictures).
    ``proportional``: the same sizes scaled by min(H, W) / 512, so a small picture shows a thin
    skeleton instead of overlapping blobs (at least 1 px for limbs and body dots, 0 = one pixel
    for hand and face dots); at the release's 768x512 both styles are the same."""
    if style == "release":
        return StrokeSizes(LIMB_HALF_WIDTH, DOT_RADIUS, 2, DOT_RADIUS, FACE_DOT_RADIUS)
    if style != "proportional":
        raise ValueError(f"pose style must be 'release' or 'proportional', got {style!r}")
    scale = min(height, width) / RELEASE_SIDE
    return StrokeSizes(
        limb_half_width=max(1, round(LIMB_HALF_WIDTH * scale)),
        dot_radius=max(1, round(DOT_RADIUS * scale)),
        hand_line=max(1, round(2 * scale)),
        hand_dot_radius=round(DOT_RADIUS * scale),
        face_dot_radius=round(FACE_DOT_RADIUS * scale),
    )


# The release keeps a hand/face point only if int(x * W) > 0.01 and int(y * H) > 0.01.
_PIXEL_EPS = 0.01


# Every pixel of a skeleton picture is black or exactly one of the colours below: the release draws
# without anti-aliasing and each shape overwrites what lies under it. So the pictures are drawn as
# uint8 indices into ``PALETTE`` (one byte a pixel instead of three, a third of the bytes through
# the DataLoader's shared memory and to the device) and coloured by one table lookup, on the device
# for training batches. The release also dims the limbs by ``(canvas * 0.6).astype(uint8)`` over
# the whole canvas after drawing them on black: the same as drawing them in their dimmed colours.
def _drawn(colour: tuple) -> tuple[int, int, int]:
    """The uint8 values OpenCV draws for ``colour`` (it rounds fractional ones)."""
    pixel = np.zeros((1, 1, 3), np.uint8)
    cv2.rectangle(pixel, (0, 0), (0, 0), colour, thickness=-1)
    return tuple(int(v) for v in pixel[0, 0])


_LIMB_INDEX = 1  # 19 dimmed limb colours, then 20 body dots, 20 hand edges, the hand dot, the face dot
_BODY_DOT_INDEX = _LIMB_INDEX + len(BODY_LIMBS)
_HAND_EDGE_INDEX = _BODY_DOT_INDEX + len(BODY_COLOURS)
_HAND_DOT_INDEX = _HAND_EDGE_INDEX + len(HAND_EDGES)
_FACE_DOT_INDEX = _HAND_DOT_INDEX + 1
PALETTE = np.zeros((256, 3), np.uint8)  # index -> RGB as the release's code writes it; 0 is black
PALETTE[_LIMB_INDEX:_BODY_DOT_INDEX] = [
    tuple(int(c * 0.6) for c in BODY_COLOURS[i]) for i in range(len(BODY_LIMBS))
]
PALETTE[_BODY_DOT_INDEX:_HAND_EDGE_INDEX] = BODY_COLOURS
PALETTE[_HAND_EDGE_INDEX:_HAND_DOT_INDEX] = [_drawn(c) for c in HAND_EDGE_COLOURS]
PALETTE[_HAND_DOT_INDEX], PALETTE[_FACE_DOT_INDEX] = HAND_DOT_COLOUR, FACE_DOT_COLOUR
RELEASE_PALETTE = np.ascontiguousarray(PALETTE[:, ::-1])  # channels reversed, as the weights saw them


def _draw_body(canvas: np.ndarray, body: np.ndarray, threshold: float, sizes: StrokeSizes) -> None:
    height, width = canvas.shape[:2]
    visible = body[:, 2] > threshold
    for limb, (a, b) in enumerate(BODY_LIMBS):
        if not (visible[a] and visible[b]):
            continue
        xa, xb = float(body[a, 0]) * width, float(body[b, 0]) * width
        ya, yb = float(body[a, 1]) * height, float(body[b, 1]) * height
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        # (xa + xb) / 2 is numpy's mean of the pair, bit for bit.
        centre = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), sizes.limb_half_width), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, _LIMB_INDEX + limb)
    for i in np.flatnonzero(visible):
        centre = (int(body[i, 0] * width), int(body[i, 1] * height))
        cv2.circle(canvas, centre, sizes.dot_radius, _BODY_DOT_INDEX + int(i), thickness=-1)


def _draw_hands(canvas: np.ndarray, hands: np.ndarray, threshold: float, sizes: StrokeSizes) -> None:
    height, width = canvas.shape[:2]
    for hand in hands:
        # Release: points with score below the threshold get coordinates -1, i.e. int(-W) < 0.
        kept = hand[:, 2] >= threshold
        px = np.array([int(x * width) for x in hand[:, 0]])
        py = np.array([int(y * height) for y in hand[:, 1]])
        shown = kept & (px > _PIXEL_EPS) & (py > _PIXEL_EPS)
        for edge, (a, b) in enumerate(HAND_EDGES):
            if shown[a] and shown[b]:
                end_a, end_b = (int(px[a]), int(py[a])), (int(px[b]), int(py[b]))
                cv2.line(canvas, end_a, end_b, _HAND_EDGE_INDEX + edge, thickness=sizes.hand_line)
        for i in np.flatnonzero(shown):
            cv2.circle(canvas, (int(px[i]), int(py[i])), sizes.hand_dot_radius, _HAND_DOT_INDEX, thickness=-1)


def _draw_face(canvas: np.ndarray, face: np.ndarray, threshold: float, sizes: StrokeSizes) -> None:
    height, width = canvas.shape[:2]
    for x, y, score in face:
        px, py = int(x * width), int(y * height)
        if score >= threshold and px > _PIXEL_EPS and py > _PIXEL_EPS:
            cv2.circle(canvas, (px, py), sizes.face_dot_radius, _FACE_DOT_INDEX, thickness=-1)


def render_pose_indices(
    body: np.ndarray,
    hands: np.ndarray | None,
    face: np.ndarray | None,
    height: int,
    width: int,
    *,
    draw_body: bool = True,
    draw_hands: bool = True,
    draw_face: bool = False,
    threshold: float = 0.3,
    style: PoseStyle = "release",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One skeleton picture as uint8 (H, W) indices into :data:`PALETTE`; arguments as for
    :func:`render_pose`. ``out``: a C-contiguous uint8 (H, W) array of zeros to draw into (returned)."""
    sizes = stroke_sizes(height, width, style)
    body = np.asarray(body, dtype=np.float64)
    if body.shape != (BODY_POINTS, 3):
        raise ValueError(f"body must be ({BODY_POINTS}, 3), got {body.shape}")
    if out is None:
        out = np.zeros((height, width), dtype=np.uint8)
    elif out.shape != (height, width) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 ({height}, {width}) array")
    if draw_body:
        _draw_body(out, body, threshold, sizes)
    if draw_hands and hands is not None:
        hands = np.asarray(hands, dtype=np.float64)
        if hands.shape != (2, HAND_POINTS, 3):
            raise ValueError(f"hands must be (2, {HAND_POINTS}, 3), got {hands.shape}")
        _draw_hands(out, hands, threshold, sizes)
    if draw_face and face is not None:
        face = np.asarray(face, dtype=np.float64)
        if face.shape != (FACE_POINTS, 3):
            raise ValueError(f"face must be ({FACE_POINTS}, 3), got {face.shape}")
        _draw_face(out, face, threshold, sizes)
    return out


def colourize(indices: np.ndarray, release_channel_order: bool = True) -> np.ndarray:
    """uint8 palette indices (...) -> uint8 pictures (..., 3)."""
    return (RELEASE_PALETTE if release_channel_order else PALETTE)[indices]


def render_pose(
    body: np.ndarray,
    hands: np.ndarray | None,
    face: np.ndarray | None,
    height: int,
    width: int,
    *,
    release_channel_order: bool = True,
    **kwargs,
) -> np.ndarray:
    """One skeleton picture, uint8 (H, W, 3) on black.

    body (20, 3), hands (2, 21, 3) or None, face (68, 3) or None; x, y normalised, score.
    ``draw_body``, ``draw_hands`` (default True), ``draw_face`` (default False) switch the parts; a
    body point is drawn if its score is above ``threshold`` (0.3), a hand or face point if it is
    not below it (the release's two rules). ``style``: ``release`` draws the release's absolute
    stroke sizes (what its weights saw), ``proportional`` scales them with the picture
    (:func:`stroke_sizes`). ``release_channel_order=True`` returns the channels
    reversed, which is what the released weights were trained on; False returns the drawing as
    the release's code made it.
    """
    return colourize(render_pose_indices(body, hands, face, height, width, **kwargs), release_channel_order)


def render_pose_index_sequence(pose: PoseSequence, height: int, width: int, **kwargs) -> np.ndarray:
    """Every frame of ``pose`` as uint8 (f, H, W) indices into :data:`PALETTE`; ``kwargs`` as for
    :func:`render_pose_indices`."""
    out = np.zeros((len(pose), height, width), np.uint8)  # calloc: pages nothing is drawn on stay free
    for i in range(len(pose)):
        face = None if pose.face is None else pose.face[i]
        render_pose_indices(pose.body[i], pose.hands[i], face, height, width, out=out[i], **kwargs)
    return out


def render_pose_sequence(
    pose: PoseSequence, height: int, width: int, *, release_channel_order: bool = True, **kwargs
) -> np.ndarray:
    """Render every frame of ``pose``: uint8 (f, H, W, 3); ``kwargs`` as for :func:`render_pose`."""
    return colourize(render_pose_index_sequence(pose, height, width, **kwargs), release_channel_order)


def pose_frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 pictures (f, H, W, 3) -> float32 tensor (3, f, H, W) in [0, 1], the UNet's pose range."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "f h w c -> c f h w").float() / 255.0


def pose_from_openpose134(xy_norm: np.ndarray, score: np.ndarray, threshold: float = 0.3) -> PoseSequence:
    """One frame in the release's 134-point OpenPose-ordered layout -> a one-frame :class:`PoseSequence`.

    Layout (fixture README §6): body 0-17, feet 18-23 (left big toe, left small toe, left heel,
    right big toe, right small toe, right heel), face 24-91, left hand 92-112, right hand 113-133.
    A toe of ours is the midpoint of the big and small toe, present only if both are above
    ``threshold`` (heels are unused), as in the release.
    """
    xy = np.asarray(xy_norm, dtype=np.float64).reshape(134, 2)
    s = np.asarray(score, dtype=np.float64).reshape(134)
    points = np.concatenate([xy, s[:, None]], axis=1)
    body = np.zeros((BODY_POINTS, 3))
    body[:18] = points[:18]
    for toe, (big, small) in ((18, (18, 19)), (19, (21, 22))):
        if s[big] > threshold and s[small] > threshold:
            body[toe] = [*(xy[big] + xy[small]) / 2, min(s[big], s[small])]
    hands = np.stack([points[92:113], points[113:134]])
    face = points[24:92]
    return PoseSequence(body[None], hands[None], face[None])


def pose_from_release_dict(pose: dict) -> PoseSequence:
    """The release's drawing dict (``bodies.candidate`` / ``subset``, ``hands``, ``faces``; -1 = dropped)
    -> a one-frame :class:`PoseSequence` with score 1 for kept points and 0 for dropped ones."""
    candidate = np.asarray(pose["bodies"]["candidate"], dtype=np.float64)
    subset = np.asarray(pose["bodies"]["subset"], dtype=np.float64)[0]
    body = np.zeros((BODY_POINTS, 3))
    for i, index in enumerate(subset[:BODY_POINTS]):
        if index >= 0:
            body[i] = [*candidate[int(index)], 1.0]

    def with_scores(xy: np.ndarray) -> np.ndarray:
        dropped = np.all(xy == -1, axis=-1)
        return np.concatenate([xy, (~dropped)[..., None].astype(np.float64)], axis=-1)

    hands = with_scores(np.asarray(pose["hands"], dtype=np.float64))
    face = with_scores(np.asarray(pose["faces"], dtype=np.float64)[0])
    return PoseSequence(body[None], hands[None], face[None])
