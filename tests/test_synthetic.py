"""The synthetic video+pose dataset: shards round-trip, motion is smooth, poses match the pictures."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np

from datamodules.format import PoseSequence, decode_mp4
from datamodules.pose_render import render_pose_sequence
from datamodules.synthetic import (
    draw_background,
    ensure_synthetic_dataset,
    identity_appearance,
    make_synthetic_video,
    write_synthetic_shards,
)


def test_video_shapes_and_determinism() -> None:
    frames, pose = make_synthetic_video(3, 16, 64, 48, seed=1)
    assert frames.shape == (16, 64, 48, 3) and frames.dtype == np.uint8
    assert pose.body.shape == (16, 20, 3) and pose.hands.shape == (16, 2, 21, 3) and pose.face is None
    again, pose_again = make_synthetic_video(3, 16, 64, 48, seed=1)
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(pose.body, pose_again.body)
    # Scores are 1 inside the frame and 0 outside.
    inside = np.all((pose.body[..., :2] >= 0) & (pose.body[..., :2] <= 1), axis=-1)
    np.testing.assert_array_equal(pose.body[..., 2], inside.astype(np.float32))
    assert inside.mean() > 0.9


def test_shard_round_trip(tmp_path: Path) -> None:
    shards = write_synthetic_shards(tmp_path, num_videos=5, num_frames=16, videos_per_shard=2, seed=3)
    assert [p.name for p in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["samples"] == 5 and manifest["frames"] == 80
    assert manifest["shards"] == [p.name for p in shards]
    samples: dict[str, dict[str, bytes]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    assert sorted(samples) == [f"train-{i:06d}" for i in range(5)]
    for sample in samples.values():
        assert set(sample) == {"mp4", "pose.npz", "json"}
        frames = decode_mp4(sample["mp4"])
        pose = PoseSequence.from_npz_bytes(sample["pose.npz"])
        meta = json.loads(sample["json"])
        assert frames.shape == (16, 64, 48, 3)
        assert len(pose) == 16 and pose.body.shape == (16, 20, 3) and pose.hands.shape == (16, 2, 21, 3)
        assert meta["source"] == "synthetic" and meta["licence"] == "CC0"
        assert (meta["frames"], meta["height"], meta["width"], meta["fps"]) == (16, 64, 48, 8.0)
    # The decoded video is the generated one up to H.264 loss.
    first = json.loads(samples["train-000000"]["json"])
    original, original_pose = make_synthetic_video(first["identity"], 16, 64, 48, seed=3 * 1_000_003)
    decoded = decode_mp4(samples["train-000000"]["mp4"])
    assert np.abs(decoded.astype(float) - original).mean() < 4.0
    np.testing.assert_allclose(
        PoseSequence.from_npz_bytes(samples["train-000000"]["pose.npz"]).body, original_pose.body, atol=1e-6
    )


def test_motion_smooth_and_nontrivial() -> None:
    for identity, seed in [(0, 0), (5, 11), (12, 4)]:
        _, pose = make_synthetic_video(identity, 48, 64, 48, seed=seed)
        xy = pose.body[..., :2] * [48, 64]  # pixels
        step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
        assert step.max() < 4.0, "joints jump between consecutive frames"
        travel = np.linalg.norm(xy - xy.mean(0), axis=-1).max(0)
        assert np.median(travel) > 1.0 and travel.max() > 4.0, "the figure hardly moves"


def test_identities_differ() -> None:
    a, b = identity_appearance(0), identity_appearance(1)
    assert a != b
    frames_a, _ = make_synthetic_video(0, 4, 64, 48, seed=0)
    frames_b, _ = make_synthetic_video(1, 4, 64, 48, seed=0)
    assert np.abs(frames_a.astype(float) - frames_b).mean() > 10.0
    np.testing.assert_array_equal(draw_background(a, 64, 48), draw_background(identity_appearance(0), 64, 48))


def test_skeleton_lies_on_the_figure() -> None:
    height, width = 192, 144
    for identity in range(4):
        frames, pose = make_synthetic_video(identity, 8, height, width, seed=identity)
        background = draw_background(identity_appearance(identity), height, width)
        figure = np.abs(frames.astype(np.int16) - background).max(-1) > 12
        skeleton = render_pose_sequence(pose, height, width, draw_hands=False).max(-1) > 0
        on_figure = (figure & skeleton).sum() / skeleton.sum()
        assert on_figure > 0.95, f"identity {identity}: only {on_figure:.2f} of skeleton pixels on the figure"
        # ... and the figure is not everywhere: the skeleton is a strong cue, not a trivial one.
        assert figure.mean() < 0.4


def test_ensure_generates_once(tmp_path: Path) -> None:
    start = time.perf_counter()
    shards = ensure_synthetic_dataset(tmp_path, num_train=16, num_val=4, num_frames=16)
    elapsed = time.perf_counter() - start
    assert elapsed < 15.0
    assert len(shards["train"]) == 2 and len(shards["val"]) == 1
    train = json.loads((tmp_path / "train" / "manifest.json").read_text())
    val = json.loads((tmp_path / "val" / "manifest.json").read_text())
    assert not set(train["identities"]) & set(val["identities"]), "validation identities must be held out"
    stamp = shards["train"][0].stat().st_mtime_ns
    again = ensure_synthetic_dataset(tmp_path, num_train=16, num_val=4, num_frames=16)
    assert again == shards and shards["train"][0].stat().st_mtime_ns == stamp
    bigger = ensure_synthetic_dataset(tmp_path, num_train=24, num_val=4, num_frames=16)
    assert len(bigger["train"]) == 3


def test_ensure_regenerates_for_other_identities(tmp_path: Path) -> None:
    # A cache made with fewer identities (the old demo default: 16) must not be reused silently.
    ensure_synthetic_dataset(tmp_path, num_train=8, num_val=1, num_train_identities=2, num_frames=12)
    ensure_synthetic_dataset(tmp_path, num_train=8, num_val=1, num_train_identities=8, num_frames=12)
    train = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert train["identities"] == list(range(8))


def test_tar_readable_by_webdataset(tmp_path: Path) -> None:
    import webdataset as wds

    shards = write_synthetic_shards(tmp_path, num_videos=2, num_frames=16, seed=0, split_name="val")
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["val-000000", "val-000001"]
    assert io.BytesIO(samples[0]["pose.npz"]).getbuffer().nbytes > 0
