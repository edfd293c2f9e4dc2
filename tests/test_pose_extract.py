"""Pose backends: DWPose post-processing and mapping, MediaPipe on the real dance video, imports."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.format import PoseSequence, decode_mp4
from datamodules.pose_backends import dwpose
from datamodules.pose_backends.mediapipe_pose import blazepose_to_body
from datamodules.pose_backends.precomputed import load_pose_file
from datamodules.pose_extract import extract_poses
from datamodules.pose_render import pose_from_release_dict, render_pose

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURE = SHARED / "fixtures" / "official_unianimate" / "pose_render"
DANCE = SHARED / "data" / "dance_source.mp4"
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


def _fixture_sets() -> list[dict]:
    if not (FIXTURE / "keypoints.json").is_file():
        pytest.skip(f"release pose fixtures absent: {FIXTURE}")
    return json.loads((FIXTURE / "keypoints.json").read_text())["sets"]


def _dwpose_pose(fixture_set: dict) -> PoseSequence:
    coco = fixture_set["coco_wholebody_133"]
    width, height = fixture_set["source_wh"]
    return dwpose.coco_wholebody_to_pose(
        np.array(coco["xy_px"])[None], np.array(coco["score"])[None], width, height
    )


def test_coco_wholebody_mapping_matches_release_pose_dict() -> None:
    for fixture_set in _fixture_sets():
        ours = _dwpose_pose(fixture_set)
        release = pose_from_release_dict(fixture_set["pose"])
        shown = ours.body[0, :, 2] > 0.3  # the release keeps a body point only above 0.3
        np.testing.assert_array_equal(shown, release.body[0, :, 2] > 0, err_msg=fixture_set["name"])
        np.testing.assert_allclose(ours.body[0, shown, :2], release.body[0, shown, :2], atol=1e-6)
        kept = ours.hands[0, ..., 2] >= 0.3  # and a hand point from 0.3 up
        np.testing.assert_array_equal(kept, release.hands[0, ..., 2] > 0, err_msg=fixture_set["name"])
        np.testing.assert_allclose(ours.hands[0][kept, :2], release.hands[0][kept, :2], atol=1e-6)


def test_coco_wholebody_mapping_renders_the_release_pictures() -> None:
    """Raw DWPose output -> our float32 layout -> renderer = the release's pictures (a last-bit
    float32 change may move a few edge pixels, as tests/test_pose_render.py allows)."""
    for fixture_set in _fixture_sets():
        pose = _dwpose_pose(fixture_set)
        for height, width in ((768, 512), (64, 64)):
            png = cv2.imread(str(FIXTURE / f"{fixture_set['name']}_{height}x{width}.png"))[..., ::-1]
            ours = render_pose(pose.body[0], pose.hands[0], None, height, width, release_channel_order=False)
            differing = (np.abs(ours.astype(int) - png).max(-1) > 2).mean()
            assert differing <= 0.002, (
                f"{fixture_set['name']} {height}x{width}: {differing:.2%} pixels differ"
            )


def test_coco_wholebody_mapping_neck_and_toes() -> None:
    keypoints = np.random.default_rng(0).uniform(0, 100, (1, 133, 2))
    scores = np.full((1, 133), 0.9)
    scores[0, 6] = 0.2  # right shoulder low -> neck hidden
    scores[0, 21] = 0.1  # right small toe low -> right toe hidden
    pose = dwpose.coco_wholebody_to_pose(keypoints, scores, 100, 200)
    np.testing.assert_allclose(
        pose.body[0, 1, :2], (keypoints[0, 5] + keypoints[0, 6]) / 2 / [100, 200], atol=1e-6
    )
    assert pose.body[0, 1, 2] == 0
    np.testing.assert_allclose(
        pose.body[0, 18, :2], (keypoints[0, 17] + keypoints[0, 18]) / 2 / [100, 200], atol=1e-6
    )
    assert pose.body[0, 18, 2] == pytest.approx(0.9) and pose.body[0, 19, 2] == pytest.approx(0.1)
    np.testing.assert_allclose(pose.body[0, 2, :2], keypoints[0, 6] / [100, 200], atol=1e-6)  # r-shoulder
    np.testing.assert_allclose(pose.hands[0, 1, 0, :2], keypoints[0, 112] / [100, 200], atol=1e-6)  # r-wrist
    assert pose.face is not None and pose.face.shape == (1, 68, 3)


def test_simcc_decode() -> None:
    simcc_x = np.full((1, 3, 576), -1.0, dtype=np.float32)
    simcc_y = np.full((1, 3, 768), -1.0, dtype=np.float32)
    simcc_x[0, 0, 100], simcc_y[0, 0, 300] = 0.9, 0.7
    simcc_x[0, 1, 11], simcc_y[0, 1, 21] = 0.4, 0.8
    locs, scores = dwpose.simcc_decode(simcc_x, simcc_y)  # point 2 never rises above 0
    np.testing.assert_allclose(locs[0], [[50, 150], [5.5, 10.5], [-0.5, -0.5]])
    np.testing.assert_allclose(scores[0], [0.7, 0.4, -1.0])


def test_crop_affine_round_trip_and_aspect() -> None:
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    cv2.circle(image, (400, 200), 3, (255, 255, 255), -1)
    box = np.array([300.0, 100.0, 500.0, 420.0])
    centre, scale = dwpose.box_to_centre_scale(box)
    assert scale[0] / scale[1] == pytest.approx(288 / 384) and scale[1] == pytest.approx(320 * 1.25)
    crop, centre, scale = dwpose.pose_input(image, box)
    assert crop.shape == (3, 384, 288)
    ys, xs = np.nonzero(crop[0] > crop[0].max() / 2)  # the dot's centroid in the crop
    back = dwpose.crop_to_frame(np.array([xs.mean(), ys.mean()]), centre, scale)
    np.testing.assert_allclose(back, [400, 200], atol=1.0)


def test_yolox_decode_and_person_boxes() -> None:
    raw = np.zeros((8400, 85), dtype=np.float32)
    raw[:, 4] = -1.0  # objectness far below threshold everywhere else
    # anchor 0 of stride 8 at grid (10, 20): a 64x128 person, a near-duplicate, and a dog
    anchor = 20 * 80 + 10
    raw[anchor, :5] = [0.5, 0.5, np.log(8), np.log(16), 0.95]
    raw[anchor, 5] = 0.95
    raw[anchor + 1, :5] = [-0.4, 0.5, np.log(8), np.log(16), 0.9]
    raw[anchor + 1, 5] = 0.9
    raw[anchor + 40, :6] = [0.5, 0.5, np.log(8), np.log(16), 0.9, 0.0]
    raw[anchor + 40, 6] = 0.9  # class 1 only
    boxes = dwpose.person_boxes(dwpose.yolox_decode(raw), ratio=0.5)
    centre = np.array([(10 + 0.5) * 8, (20 + 0.5) * 8])
    expected = np.concatenate([centre - [32, 64], centre + [32, 64]]) / 0.5
    np.testing.assert_allclose(boxes, expected[None], atol=1e-3)


def test_letterbox() -> None:
    image = np.full((320, 160, 3), 7, dtype=np.uint8)
    padded, ratio = dwpose.letterbox(image)
    assert padded.shape == (3, 640, 640) and ratio == 2.0
    assert padded[:, 639, 0].tolist() == [7.0, 7.0, 7.0] and padded[:, 0, 639].tolist() == [114.0] * 3


def test_dwpose_missing_weights_names_the_file(tmp_path: Path) -> None:
    detector = tmp_path / "yolox_l.onnx"
    detector.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="dw-ll_ucoco_384.onnx"):
        extract_poses(
            np.zeros((1, 8, 8, 3), np.uint8),
            "dwpose",
            detector=detector,
            pose_model=tmp_path / "dw-ll_ucoco_384.onnx",
        )


class _FakeSession:
    """Stands in for an onnxruntime session: records its input, returns fixed outputs."""

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self.outputs, self.seen = outputs, []

    def get_inputs(self) -> list:
        return [type("Input", (), {"name": "input"})()]

    def run(self, _names: None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.seen.append(feeds["input"].shape)
        return self.outputs


def test_dwpose_pipeline_with_fake_sessions() -> None:
    """Detector output -> box -> 288x384 crop -> SimCC -> frame coordinates -> our layout."""
    raw = np.zeros((8400, 85), dtype=np.float32)
    raw[:, 4] = -1.0
    # stride 32, grid (10, 7): centre (320, 240), 128 x 256 px on a 640x480 frame (ratio 1)
    raw[8000 + 7 * 20 + 10, :6] = [0.0, 0.5, np.log(4), np.log(8), 0.9, 0.9]
    u = np.arange(133)  # point k peaks at crop x = k, y = 2k
    simcc_x = np.zeros((1, 133, 576), np.float32)
    simcc_y = np.zeros((1, 133, 768), np.float32)
    simcc_x[0, u, 2 * u], simcc_y[0, u, 4 * u] = 0.8, 0.9
    extractor = object.__new__(dwpose.DWPoseExtractor)
    extractor.detector = _FakeSession([raw[None]])
    extractor.pose_model = _FakeSession([simcc_x, simcc_y])
    pose = extractor(np.zeros((2, 480, 640, 3), np.uint8))
    assert extractor.detector.seen == [(1, 3, 640, 640)] * 2
    assert extractor.pose_model.seen == [(1, 3, 384, 288)] * 2
    # box padded 1.25x to 160 x 320, widened to the 3:4 aspect: 240 x 320 around (320, 240)
    x = (u / 288 * 240 + 200) / 640
    y = (2 * u / 384 * 320 + 80) / 480
    assert len(pose) == 2
    np.testing.assert_allclose(pose.body[0, [0, 2, 5, 16], 0], x[[0, 6, 5, 4]], atol=1e-6)
    np.testing.assert_allclose(pose.body[0, [0, 2, 5, 16], 1], y[[0, 6, 5, 4]], atol=1e-6)
    np.testing.assert_allclose(pose.hands[1, 0, 0, :2], [x[91], y[91]], atol=1e-6)
    np.testing.assert_allclose(pose.body[1, [0, 2, 3], 2], 0.8, atol=1e-6)


def test_unknown_backend() -> None:
    with pytest.raises(ValueError, match="unknown pose backend"):
        extract_poses(np.zeros((1, 8, 8, 3), np.uint8), "openpose")  # type: ignore[arg-type]


def test_blazepose_to_body_mapping() -> None:
    landmarks = np.zeros((33, 3), dtype=np.float32)
    landmarks[:, 0] = np.arange(33) / 40  # x encodes the BlazePose index
    landmarks[:, 1] = 0.5
    landmarks[:, 2] = 0.9
    landmarks[12, 2] = 0.6
    landmarks[28, 1] = 1.2  # right ankle extrapolated below the frame
    body = blazepose_to_body(landmarks)
    np.testing.assert_allclose(
        body[[0, 2, 5, 8, 11, 14, 15, 18, 19], 0] * 40, [0, 12, 11, 24, 23, 5, 2, 31, 32], atol=1e-5
    )
    assert body[1, 0] == pytest.approx(11.5 / 40) and body[1, 2] == pytest.approx(0.6)
    assert body[10, 2] == 0


def test_precomputed_formats(tmp_path: Path) -> None:
    sets = _fixture_sets()
    release = tmp_path / "release.json"
    release.write_text(json.dumps([s["pose"] for s in sets]))
    pose = load_pose_file(release)
    assert len(pose) == len(sets) and pose.face is not None
    ours = tmp_path / "ours.npz"
    ours.write_bytes(pose.to_npz_bytes())
    frames = np.zeros((len(sets), 8, 8, 3), np.uint8)
    np.testing.assert_array_equal(extract_poses(frames, "precomputed", path=ours).body, pose.body)
    with pytest.raises(ValueError, match="pose frames"):
        extract_poses(frames[:1], "precomputed", path=ours)


@pytest.fixture(scope="module")
def dance_poses(tmp_path_factory: pytest.TempPathFactory) -> tuple[PoseSequence, tuple[int, int], float]:
    """MediaPipe keypoints of the dance video, cached as npz in this test's tmp dir."""
    if not DANCE.is_file():
        pytest.skip(f"example video absent: {DANCE}")
    if not HAS_MEDIAPIPE:
        pytest.skip("mediapipe not installed (pip install -e '.[pose]' in a numpy<2 environment)")
    cache = tmp_path_factory.mktemp("dance_pose") / "dance_source.pose.npz"
    frames = decode_mp4(str(DANCE))[::2]  # every other frame keeps the test well under 60 s
    start = time.perf_counter()
    pose = extract_poses(frames, "mediapipe")
    seconds = time.perf_counter() - start
    cache.write_bytes(pose.to_npz_bytes())
    return load_pose_file(cache), frames.shape[1:3], seconds / len(frames)


@pytest.mark.slow
def test_mediapipe_finds_the_dancer(dance_poses: tuple[PoseSequence, tuple[int, int], float]) -> None:
    pose, _, seconds_per_frame = dance_poses
    found = (pose.body[:, [1, 2, 5, 8, 11], 2] > 0.3).all(axis=1)  # neck, shoulders, hips
    assert found.mean() >= 0.95, f"person in {found.mean():.0%} of frames"
    shown = pose.body[..., 2] > 0
    assert ((pose.body[..., :2][shown] >= 0) & (pose.body[..., :2][shown] <= 1)).all()
    hands = pose.hands[..., 2] > 0
    assert hands.any(axis=(1, 2)).mean() > 0.5, "Holistic should find a hand in most frames"
    assert ((pose.hands[..., :2][hands] >= 0) & (pose.hands[..., :2][hands] <= 1)).all()
    # A dancer's neck sits between the ears' height and the hips'.
    assert (pose.body[found, 1, 1] < pose.body[found][:, [8, 11], 1].mean(axis=1)).all()
    assert seconds_per_frame < 0.2
