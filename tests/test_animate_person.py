"""``--data.driving`` as a video of a person (``--data.pose_backend``): the photo's and the video's
poses are extracted, the video's aligned to the photo's (the release's alignment), rendered and
animated; the skeleton video is written beside the output; no person is a one-line error.

Pose backends live in their own environment in CI (.ci/run), so the datamodule is tested here with a
stand-in backend that returns the synthetic figures' exact keypoints; the MediaPipe test runs there.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from demo_helpers import REPO, SHARED, demo_overrides
from PIL import Image

from datamodules import animate
from datamodules.animate import AnimateDataModule
from datamodules.format import PoseSequence
from datamodules.pose_align import align_pose
from datamodules.synthetic import make_synthetic_video
from unianimate.video_io import encode_mp4

NECK = 1


@pytest.fixture
def person_files(tmp_path: Path) -> dict:
    """A photo of one synthetic figure and an mp4 of another one dancing, with their true keypoints."""
    photo, photo_pose = make_synthetic_video(identity=0, num_frames=1, height=96, width=64, seed=1)
    frames, pose = make_synthetic_video(identity=2, num_frames=5, height=80, width=80, seed=4)
    Image.fromarray(photo[0]).save(tmp_path / "me.png")
    (tmp_path / "dance.mp4").write_bytes(encode_mp4(frames, 8.0))
    return {
        "photo": tmp_path / "me.png",
        "video": tmp_path / "dance.mp4",
        "photo_pose": photo_pose,
        "pose": pose,
    }


class StandIn:
    """A pose backend that knows the true keypoints: one frame -> the photo's, else the video's."""

    def __init__(self, photo_pose: PoseSequence, pose: PoseSequence) -> None:
        self.photo_pose, self.pose, self.calls = photo_pose, pose, []

    def __call__(self, frames: np.ndarray, progress: bool = False) -> PoseSequence:
        self.calls.append(frames.shape)
        return self.photo_pose if len(frames) == 1 else self.pose.frames(slice(0, len(frames)))


def _module(files: dict, monkeypatch, photo_pose=None, pose=None) -> tuple[AnimateDataModule, StandIn]:
    stand_in = StandIn(photo_pose or files["photo_pose"], pose or files["pose"])
    monkeypatch.setattr(animate, "make_extractor", lambda backend, **kwargs: stand_in)
    dm = AnimateDataModule(
        str(files["photo"]), str(files["video"]), height=64, width=48, pose_backend="mediapipe"
    )
    return dm, stand_in


def test_person_video_poses_are_extracted_aligned_and_rendered(person_files, monkeypatch) -> None:
    dm, stand_in = _module(person_files, monkeypatch)
    batch = dm.build_batch()
    assert stand_in.calls == [(1, 96, 64, 3), (5, 80, 80, 3)]  # the photo, then the decoded video
    expected = align_pose(
        person_files["photo_pose"], person_files["pose"], reference_hw=(96, 64), driving_hw=(80, 80)
    )
    np.testing.assert_allclose(dm.aligned_pose.body, expected.body)
    # Aligned: the first driving frame's neck sits on the photo's neck.
    np.testing.assert_allclose(
        dm.aligned_pose.body[0, NECK, :2], person_files["photo_pose"].body[0, NECK, :2], atol=1e-6
    )
    assert batch["pose"].shape == (3, 5, 64, 48) and batch["ref_pose"].shape == (3, 64, 48)
    unaligned = dm._render(person_files["pose"], 96, 64)
    rendered = dm._render(expected, 96, 64)
    assert torch.equal(batch["pose"], animate.pose_frames_to_tensor(rendered))
    assert not np.array_equal(rendered, unaligned)
    assert torch.equal(
        batch["ref_pose"], animate.pose_frames_to_tensor(dm._render(person_files["photo_pose"], 96, 64))[:, 0]
    )


def _nobody(pose: PoseSequence) -> PoseSequence:
    body = pose.body.copy()
    body[0, :, 2] = 0.0
    return PoseSequence(body, pose.hands)


def test_no_person_in_the_photo_or_the_first_frame_is_one_line(person_files, monkeypatch) -> None:
    dm, _ = _module(person_files, monkeypatch, photo_pose=_nobody(person_files["photo_pose"]))
    with pytest.raises(
        ValueError, match=r"^reference: no person found in '.*me.png' \(pose backend mediapipe\)$"
    ):
        dm.build_batch()
    dm, _ = _module(person_files, monkeypatch, pose=_nobody(person_files["pose"]))
    with pytest.raises(ValueError, match=r"^driving: no person found in the first frame of '.*dance.mp4'"):
        dm.build_batch()


@pytest.mark.slow
def test_predict_from_a_photo_and_a_dance_video(person_files, monkeypatch, demo_root, tmp_path) -> None:
    from unianimate.cli import main

    monkeypatch.setattr(
        animate,
        "make_extractor",
        lambda backend, **kwargs: StandIn(person_files["photo_pose"], person_files["pose"]),
    )
    out = tmp_path / "run"
    main(
        [
            "predict",
            *demo_overrides(demo_root, out),
            "--config",
            str(REPO / "configs" / "animate.yaml"),
            f"--data.init_args.reference={person_files['photo']}",
            f"--data.init_args.driving={person_files['video']}",
            "--data.init_args.pose_backend=mediapipe",
            "--allow_random_weights=true",  # the path through predict is tested, not the weights
        ]
    )
    for name in ("dance.mp4", "dance_pose.mp4", "dance_compare.mp4"):
        with av.open(str(out / "predict" / name)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 5, name


def test_mediapipe_on_the_real_dance_video(tmp_path) -> None:
    """The real thing, in CI's pose environment: a catalogue photo driven by the example dance."""
    pytest.importorskip("mediapipe", reason="the pose extra runs in its own environment (.ci/run)")
    if not (SHARED / "data" / "dance_source.mp4").is_file():
        pytest.skip(f"example data not found at {SHARED / 'data'}")
    dm = AnimateDataModule(
        str(SHARED / "data" / "ref_fashion_a.jpg"),
        str(SHARED / "data" / "dance_source.mp4"),
        height=768,
        width=512,
        max_frames=4,
        pose_backend="mediapipe",
    )
    batch = dm.build_batch()
    assert batch["pose"].shape == (3, 4, 768, 512) and batch["pose"].amax() > 0.5
    neck = dm.extracted_reference_pose.body[0, NECK]
    assert neck[2] > 0.3 and 0 < neck[0] < 1 and 0 < neck[1] < 1  # MediaPipe found the photo's person
    np.testing.assert_allclose(dm.aligned_pose.body[0, NECK, :2], neck[:2], atol=1e-5)  # and aligned to it
