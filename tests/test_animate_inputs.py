"""``unianimate predict``'s pose input: an mp4 of rendered skeletons is accepted, any other video is
refused with one line (real H.264 files)."""

from __future__ import annotations

import pytest
from PIL import Image

from datamodules.animate import AnimateDataModule
from datamodules.format import encode_mp4
from datamodules.pose_render import render_pose_sequence
from datamodules.synthetic import make_synthetic_video
from unianimate.errors import InputError


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("animate")
    frames, pose = make_synthetic_video(identity=1, num_frames=6, height=64, width=48, seed=3)
    Image.fromarray(frames[0]).save(root / "ref.png")
    (root / "skeletons.mp4").write_bytes(encode_mp4(render_pose_sequence(pose, 64, 48), 8.0))
    (root / "video.mp4").write_bytes(encode_mp4(frames, 8.0))
    return root


def test_a_rendered_skeleton_video_is_accepted(inputs):
    batch = AnimateDataModule(str(inputs / "ref.png"), str(inputs / "skeletons.mp4")).build_batch()
    assert batch["pose"].shape == (3, 6, 64, 48)


def test_an_rgb_video_is_not_taken_for_skeletons(inputs):
    """Before: any video was accepted as the pose input and animated."""
    with pytest.raises(InputError, match=r"driving: '.*video.mp4' does not look like rendered skeletons"):
        AnimateDataModule(str(inputs / "ref.png"), str(inputs / "video.mp4")).build_batch()
