"""The skeleton renderer against the release's own drawings (fixture README §6)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.format import PoseSequence
from datamodules.pose_render import (
    pose_frames_to_tensor,
    pose_from_openpose134,
    pose_from_release_dict,
    render_pose,
    render_pose_sequence,
    stroke_sizes,
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = SHARED / "fixtures" / "official_unianimate" / "pose_render"
SIZES = [(768, 512), (64, 64)]


def _sets() -> list[dict]:
    if not (FIXTURES / "keypoints.json").exists():
        pytest.skip(f"release pose-render fixtures not found at {FIXTURES}")
    return json.loads((FIXTURES / "keypoints.json").read_text())["sets"]


def _png(name: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(FIXTURES / name).convert("RGB"))


def _differing_fraction(a: np.ndarray, b: np.ndarray, tolerance: int = 0) -> float:
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > tolerance).mean())


@pytest.mark.parametrize("layout", ["openpose_134", "pose"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_release_drawings(layout: str, size: tuple[int, int]) -> None:
    height, width = size
    for s in _sets():
        if layout == "openpose_134":
            pose = pose_from_openpose134(s["openpose_134"]["xy_norm"], s["openpose_134"]["score"])
        else:
            pose = pose_from_release_dict(s["pose"])
        ours = render_pose(
            pose.body[0], pose.hands[0], pose.face[0], height, width, release_channel_order=False
        )
        render = s["renders"][f"{height}x{width}"]
        reference = _png(render["file"])
        assert reference.shape == ours.shape
        assert _differing_fraction(ours, reference) == 0.0, s["name"]
        assert hashlib.sha256(ours.tobytes()).hexdigest() == render["sha256_of_raw_array"], s["name"]
        assert int((ours.max(-1) > 0).sum()) == render["nonzero_pixels"]


def test_float32_storage_stays_close() -> None:
    """Keypoints pass through float32 npz in the shards; a last-bit change may move a pixel edge."""
    for s in _sets():
        pose = pose_from_openpose134(s["openpose_134"]["xy_norm"], s["openpose_134"]["score"])
        pose = PoseSequence.from_npz_bytes(pose.to_npz_bytes())
        for height, width in SIZES:
            ours = render_pose(pose.body[0], pose.hands[0], None, height, width, release_channel_order=False)
            reference = _png(s["renders"][f"{height}x{width}"]["file"])
            assert _differing_fraction(ours, reference, tolerance=2) <= 0.01, s["name"]


def test_release_channel_order_is_reversed() -> None:
    s = _sets()[0]
    pose = pose_from_release_dict(s["pose"])
    drawing = render_pose(pose.body[0], pose.hands[0], None, 64, 64, release_channel_order=False)
    released = render_pose(pose.body[0], pose.hands[0], None, 64, 64)
    np.testing.assert_array_equal(released, drawing[..., ::-1])
    assert not np.array_equal(released, drawing)


def _standing() -> PoseSequence:
    sets = _sets()
    return pose_from_openpose134(sets[0]["openpose_134"]["xy_norm"], sets[0]["openpose_134"]["score"])


def test_switches() -> None:
    pose = _standing()
    body, hands, face = pose.body[0], pose.hands[0], pose.face[0]
    full = render_pose(body, hands, face, 768, 512, release_channel_order=False)
    no_hands = render_pose(body, hands, face, 768, 512, draw_hands=False, release_channel_order=False)
    only_hands = render_pose(body, hands, face, 768, 512, draw_body=False, release_channel_order=False)
    with_face = render_pose(body, hands, face, 768, 512, draw_face=True, release_channel_order=False)
    hand_pixels = only_hands.max(-1) > 0
    changed = np.any(full != no_hands, axis=-1)
    assert changed.sum() > 100 and not np.any(changed & ~hand_pixels)
    np.testing.assert_array_equal(
        no_hands, render_pose(body, None, face, 768, 512, release_channel_order=False)
    )
    # Face dots are white; nothing else is.
    assert (np.all(full == 255, axis=-1)).sum() == 0
    assert (np.all(with_face == 255, axis=-1)).sum() > 100
    empty = render_pose(body, hands, face, 64, 64, draw_body=False, draw_hands=False)
    assert empty.max() == 0


def test_threshold_hides_points() -> None:
    pose = _standing()
    body = pose.body[0].copy()
    shown = render_pose(body, None, None, 64, 64, release_channel_order=False)
    body[:, 2] = 0.3  # exactly the threshold: a body point needs a score above it
    assert render_pose(body, None, None, 64, 64).max() == 0
    assert shown.max() > 0


def test_sequence_and_tensor() -> None:
    one = _standing()
    pose = PoseSequence(np.repeat(one.body, 3, 0), np.repeat(one.hands, 3, 0), np.repeat(one.face, 3, 0))
    frames = render_pose_sequence(pose, 64, 48)
    assert frames.shape == (3, 64, 48, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[1], render_pose(one.body[0], one.hands[0], None, 64, 48))
    tensor = pose_frames_to_tensor(frames)
    assert tensor.shape == (3, 3, 64, 48) and tensor.dtype == torch.float32
    assert float(tensor.max()) <= 1.0 and float(tensor.max()) > 0.5
    torch.testing.assert_close(tensor[:, 0], torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255)


# --- The release's own pictures of real data (shared/data/pose_renders) ----------------------------
# Their keypoints were not published, so the body keypoints are read back from the pictures: every
# body dot is a filled radius-4 circle in its own full-intensity colour (limbs are dimmed to 0.6),
# which survives an erosion that removes the 2-px hand strokes. Dots therefore match by
# construction; what is checked is everything else (limb colours, widths, dimming, channel order,
# JPEG path). Keypoints are known only to the pixel, so limb edges may move by a pixel; hands
# cannot be indexed from blue dots alone and are masked out.
REAL = SHARED / "data" / "pose_renders"


def _dots(drawing: np.ndarray, colour: tuple[int, int, int]) -> list[tuple[int, np.ndarray]]:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = (np.abs(drawing.astype(np.int16) - colour).max(-1) <= 40).astype(np.uint8)
    n, _, stats, centres = cv2.connectedComponentsWithStats(cv2.erode(mask, kernel), connectivity=8)
    return [(int(stats[k, cv2.CC_STAT_AREA]), centres[k]) for k in range(1, n)]


def _read_back_body(drawing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body keypoints (20, 3) from a release picture (drawing channel order), and a hand mask."""
    import cv2

    from datamodules.pose_render import BODY_COLOURS

    height, width = drawing.shape[:2]
    body = np.zeros((20, 3))
    for i, colour in enumerate(BODY_COLOURS[:19]):
        found = _dots(drawing, colour)
        if i == 12:  # the left knee shares the hand dots' blue: it is the most isolated blue dot
            far = [min((np.hypot(*(c - o)) for _, o in found if o is not c), default=1e9) for _, c in found]
            found = [found[int(np.argmax(far))]] if found else []
        if i == 3:  # the right elbow and right toe share a colour: the upper dot is the elbow
            pair = sorted((c for _, c in sorted(found, key=lambda t: -t[0])[:2]), key=lambda c: c[1])
            picks = dict(zip((3, 19), pair))
        else:
            picks = {i: max(found, key=lambda t: t[0])[1]} if found else {}
        for j, c in picks.items():
            body[j] = [(round(c[0]) + 0.5) / width, (round(c[1]) + 0.5) / height, 1.0]
    hands = np.zeros((height, width), np.uint8)
    blue = [c for _, c in _dots(drawing, (0, 0, 255))]
    for c in blue:
        if sum(np.hypot(*(c - o)) < 30 for o in blue) >= 3:  # hand dots come in clusters
            cv2.circle(hands, (round(c[0]), round(c[1])), 28, 1, -1)
    return body, hands.astype(bool)


@pytest.mark.parametrize("name", ["0000", "0001", "0002", "0003"])
def test_release_pictures_of_real_data(name: str) -> None:
    """ref_pose.jpg is left out: its right-hip dot is hidden under the right hand."""
    import io

    import cv2
    from PIL import Image

    path = REAL / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"release pose pictures not found at {REAL}")
    seen_by_model = np.asarray(Image.open(path).convert("RGB"))  # how the release's loader reads it
    body, hands = _read_back_body(seen_by_model[..., ::-1])
    assert int((body[:, 2] > 0).sum()) == 20
    ours = render_pose(body, None, None, *seen_by_model.shape[:2])  # release channel order
    # The release wrote its drawing array with OpenCV's JPEG writer at quality 95: do the same.
    encoded = cv2.imencode(".jpg", np.ascontiguousarray(ours[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
    ours = np.asarray(Image.open(io.BytesIO(encoded.tobytes())).convert("RGB"))
    difference = np.abs(ours.astype(np.int16) - seen_by_model).max(-1)
    skeleton = ((seen_by_model.max(-1) > 30) | (ours.max(-1) > 30)) & ~hands
    assert (difference[~hands] > 32).mean() < 0.01
    assert (difference[skeleton] > 32).mean() < 0.2
    # The other channel order is clearly wrong on the same pixels.
    swapped = np.abs(ours[..., ::-1].astype(np.int16) - seen_by_model).max(-1)
    assert (swapped[skeleton] > 32).mean() > 0.5


def _figure_pose() -> PoseSequence:
    from datamodules.synthetic import make_synthetic_video

    return make_synthetic_video(3, 3, 64, 48, seed=5)[1]


def test_proportional_style_is_the_release_style_at_the_release_size() -> None:
    pose = _figure_pose()
    for i in range(len(pose)):
        release = render_pose(pose.body[i], pose.hands[i], None, 768, 512)
        proportional = render_pose(pose.body[i], pose.hands[i], None, 768, 512, style="proportional")
        np.testing.assert_array_equal(proportional, release)
    assert stroke_sizes(768, 512, "proportional") == stroke_sizes(64, 48, "release")


def _limb_thickness(height: int, width: int, style: str) -> int:
    """Rows covered at the middle column by one horizontal limb (neck -> right shoulder; the dots
    at its ends are far from the middle)."""
    body = np.zeros((20, 3))
    body[1], body[2] = (0.25, 0.5, 1.0), (0.75, 0.5, 1.0)
    picture = render_pose(body, None, None, height, width, style=style, release_channel_order=False)
    return int((picture[:, width // 2].max(-1) > 0).sum())


def test_proportional_strokes_scale_with_the_picture() -> None:
    # The release draws a 9-pixel-wide limb at every size: at 64x48 a fifth of the picture's width.
    assert [_limb_thickness(h, w, "release") for h, w in ((64, 48), (256, 192), (768, 512))] == [9, 9, 9]
    # Proportional: 2 * round(4 * min(H, W) / 512) + 1 rows, at least 3.
    assert [_limb_thickness(h, w, "proportional") for h, w in ((64, 48), (256, 192), (768, 512))] == [3, 5, 9]
    pose = _figure_pose()
    release = render_pose(pose.body[0], pose.hands[0], None, 64, 48)
    proportional = render_pose(pose.body[0], pose.hands[0], None, 64, 48, style="proportional")
    # The same skeleton, drawn thin: it covers well under half the pixels of the release's blobs.
    lit_release, lit_proportional = release.max(-1) > 0, proportional.max(-1) > 0
    assert lit_proportional.sum() < 0.5 * lit_release.sum()
    assert lit_proportional.sum() > 0.15 * lit_release.sum()
    # Thin strokes hide nothing: every limb and dot colour of the release's picture is still seen,
    # and more (limbs and dots its overlapping blobs cover up).
    colours = {tuple(c) for c in proportional.reshape(-1, 3)}
    assert colours > {tuple(c) for c in release.reshape(-1, 3)}
    with pytest.raises(ValueError, match="pose style"):
        render_pose(pose.body[0], None, None, 64, 48, style="thin")


def test_demo_config_draws_proportional_skeletons(tmp_path) -> None:
    """configs/demo.yaml chooses the proportional style, and its training clips are drawn with it."""
    import yaml

    from datamodules.clips import ClipExample

    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text())
    assert demo["data"]["init_args"]["pose_style"] == "proportional"
    pose = _figure_pose()
    thin = ClipExample(2, 1, 64, 48, pose_style="proportional").render(pose)
    blobs = ClipExample(2, 1, 64, 48).render(pose)
    assert (thin > 0).sum() < 0.5 * (blobs > 0).sum()
