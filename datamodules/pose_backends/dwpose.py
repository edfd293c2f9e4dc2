"""DWPose whole-body keypoints (YOLOX-L person detector + DW-LL 384x288 SimCC model, ONNX).

Pre- and post-processing follow the public DWPose annotator (IDEA-Research/DWPose,
``ControlNet-v1-1-nightly/annotator/dwpose/onnxdet.py``, ``onnxpose.py``, ``wholebody.py``) that
the UniAnimate release runs: a 640x640 letterbox (pad 114) for YOLOX, per-class NMS 0.45 and
person score > 0.3; the top box (or the whole frame if none) padded 1.25x, fixed to the 288:384
aspect and warped to 288x384; ImageNet mean/std; SimCC argmax decoding with split ratio 2.
Like the release, only the first (highest-scoring) person is kept, and both networks get the frame
in the channel order it is given in (RGB here, as in the ControlNet annotator).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from datamodules.format import BODY_POINTS, PoseSequence

INSTALL_HINT = "the dwpose backend needs onnxruntime: pip install -e '.[pose]' (or pip install onnxruntime)"
DETECTOR_SIZE = (640, 640)  # h, w
POSE_SIZE = (288, 384)  # w, h
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# OpenPose-18 index -> COCO-WholeBody index; the neck (1) is the mean of the shoulders 5, 6.
OPENPOSE_FROM_COCO = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LEFT_TOES, RIGHT_TOES = (17, 18), (20, 21)  # big toe, small toe (heels 19 and 22 are unused)
FACE, LEFT_HAND, RIGHT_HAND = slice(23, 91), slice(91, 112), slice(112, 133)


def letterbox(image: np.ndarray, size: tuple[int, int] = DETECTOR_SIZE) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> float32 (3, h, w) resized into the top-left corner on grey 114, and the ratio."""
    ratio = min(size[0] / image.shape[0], size[1] / image.shape[1])
    resized = cv2.resize(
        image, (int(image.shape[1] * ratio), int(image.shape[0] * ratio)), interpolation=cv2.INTER_LINEAR
    )
    padded = np.full((*size, 3), 114, dtype=np.uint8)
    padded[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32), ratio


def yolox_decode(outputs: np.ndarray, size: tuple[int, int] = DETECTOR_SIZE) -> np.ndarray:
    """Raw YOLOX head (n, 4 + 1 + classes) on strides 8/16/32 -> centre-size boxes in letterbox pixels."""
    grids, strides = [], []
    for stride in (8, 16, 32):
        h, w = size[0] // stride, size[1] // stride
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((h * w, 1), stride))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    decoded = np.array(outputs, dtype=np.float32, copy=True)
    decoded[:, :2] = (decoded[:, :2] + grid) * stride
    decoded[:, 2:4] = np.exp(decoded[:, 2:4]) * stride
    return decoded


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy single-class NMS on (n, 4) x1 y1 x2 y2 boxes (the +1 pixel convention of onnxdet.py)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        overlap = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[np.where(overlap <= threshold)[0] + 1]
    return keep


def person_boxes(decoded: np.ndarray, ratio: float, nms_threshold: float = 0.45) -> np.ndarray:
    """Decoded YOLOX predictions -> person boxes (n, 4) x1 y1 x2 y2 in frame pixels, best first."""
    centre, extent = decoded[:, :2], decoded[:, 2:4]
    boxes = np.concatenate([centre - extent / 2, centre + extent / 2], axis=1) / ratio
    scores = decoded[:, 4:5] * decoded[:, 5:]
    # Class-aware NMS at score 0.1, then persons (class 0) above 0.3, as onnxdet.py does; other
    # classes never suppress a person there, so only class 0 needs the NMS.
    valid = scores[:, 0] > 0.1
    boxes, person = boxes[valid], scores[valid, 0]
    keep = nms(boxes, person, nms_threshold) if len(boxes) else []
    keep = [i for i in keep if person[i] > 0.3]
    return boxes[keep].reshape(-1, 4)


def box_to_centre_scale(box: np.ndarray, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """x1 y1 x2 y2 -> centre (2,), padded size (2,) fixed to the pose model's w:h aspect."""
    x1, y1, x2, y2 = box
    centre = np.array([x1 + x2, y1 + y2]) * 0.5
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = POSE_SIZE[0] / POSE_SIZE[1]
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return centre, scale


def crop_matrix(centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """2x3 affine map of the (centre, scale) box onto the 288x384 model input (no rotation)."""
    w, h = POSE_SIZE
    # The three point pairs of get_warp_matrix: centre, half a width up, and that rotated by 90°.
    src = np.float32([centre, centre + [0.0, -scale[0] / 2], centre + [-scale[0] / 2, -scale[0] / 2]])
    dst = np.float32([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [0.0, h / 2 - w / 2]])
    return cv2.getAffineTransform(src, dst)


def pose_input(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame and box -> normalised float32 (3, 384, 288) crop, centre, scale."""
    centre, scale = box_to_centre_scale(box)
    crop = cv2.warpAffine(image, crop_matrix(centre, scale), POSE_SIZE, flags=cv2.INTER_LINEAR)
    crop = (crop.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(crop.transpose(2, 0, 1)), centre, scale


def simcc_decode(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC logits (n, k, Wx), (n, k, Wy) -> locations (n, k, 2) in input pixels, scores (n, k).

    The score is the smaller of the two axis maxima; a point whose score is <= 0 is placed at -1.
    """
    x_locs, y_locs = simcc_x.argmax(-1), simcc_y.argmax(-1)
    locs = np.stack([x_locs, y_locs], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


def crop_to_frame(locs: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Model-input pixels (..., 2) -> frame pixels, inverting :func:`crop_matrix`."""
    return locs / np.array(POSE_SIZE) * scale + centre - scale / 2


def coco_wholebody_to_pose(
    keypoints: np.ndarray, scores: np.ndarray, width: int, height: int
) -> PoseSequence:
    """COCO-WholeBody points (f, 133, 2) in pixels with scores (f, 133) -> normalised :class:`PoseSequence`.

    As the release's ``wholebody.py``: neck = mean of the shoulders with score 1 if both shoulders
    are above 0.3, else 0; OpenPose order; toe = midpoint of the big and small toe with the smaller
    score (so it shows only when both do); hands index 0 = left; the 68 face points kept.
    """
    xy = np.asarray(keypoints, dtype=np.float64) / np.array([width, height])
    s = np.asarray(scores, dtype=np.float64)
    points = np.concatenate([xy, s[..., None]], axis=-1)
    body = np.zeros((len(points), BODY_POINTS, 3))
    for ours, theirs in enumerate(OPENPOSE_FROM_COCO):
        if theirs >= 0:
            body[:, ours] = points[:, theirs]
    body[:, 1, :2] = xy[:, [5, 6]].mean(axis=1)
    body[:, 1, 2] = ((s[:, 5] > 0.3) & (s[:, 6] > 0.3)).astype(np.float64)
    for ours, (big, small) in ((18, LEFT_TOES), (19, RIGHT_TOES)):
        body[:, ours, :2] = (xy[:, big] + xy[:, small]) / 2
        body[:, ours, 2] = np.minimum(s[:, big], s[:, small])
    hands = np.stack([points[:, LEFT_HAND], points[:, RIGHT_HAND]], axis=1)
    return PoseSequence(body.astype(np.float32), hands.astype(np.float32), points[:, FACE].astype(np.float32))


class DWPoseExtractor:
    """DWPose on onnxruntime; ``detector`` is yolox_l.onnx, ``pose_model`` dw-ll_ucoco_384.onnx."""

    def __init__(
        self,
        detector: str | Path,
        pose_model: str | Path,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        for path in (detector, pose_model):
            if not Path(path).is_file():
                raise FileNotFoundError(f"dwpose weights not found: {path}")
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        self.detector = onnxruntime.InferenceSession(str(detector), providers=list(providers))
        self.pose_model = onnxruntime.InferenceSession(str(pose_model), providers=list(providers))

    def first_person(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame (H, W, 3) uint8 -> keypoints (133, 2) in pixels and scores (133,)."""
        letterboxed, ratio = letterbox(image)
        raw = self.detector.run(None, {self.detector.get_inputs()[0].name: letterboxed[None]})[0][0]
        boxes = person_boxes(yolox_decode(raw), ratio)
        box = boxes[0] if len(boxes) else np.array([0, 0, image.shape[1], image.shape[0]], dtype=np.float32)
        crop, centre, scale = pose_input(image, box)
        simcc_x, simcc_y = self.pose_model.run(None, {self.pose_model.get_inputs()[0].name: crop[None]})
        locs, scores = simcc_decode(simcc_x, simcc_y)
        return crop_to_frame(locs[0], centre, scale), scores[0]

    def __call__(self, frames: np.ndarray, progress: bool = False) -> PoseSequence:
        """frames (f, H, W, 3) uint8 RGB -> keypoints of the first detected person per frame."""
        results = [self.first_person(frame) for frame in tqdm(frames, desc="dwpose", disable=not progress)]
        keypoints = np.stack([k for k, _ in results])
        scores = np.stack([s for _, s in results])
        return coco_wholebody_to_pose(keypoints, scores, frames.shape[2], frames.shape[1])
