"""Corrupt or truncated samples are skipped and counted; iteration always finishes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from datamodules.format import PoseSequence, encode_sample
from datamodules.video_datamodule import VideoPoseDataModule


def sample(key: str, rng: np.random.Generator, frames: int = 16) -> dict:
    video = rng.integers(0, 256, (frames, 32, 24, 3), dtype=np.uint8)
    body = rng.uniform(0.2, 0.8, (frames, 20, 3)).astype(np.float32)
    hands = rng.uniform(0.2, 0.8, (frames, 2, 21, 3)).astype(np.float32)
    return encode_sample(key, video, 8.0, PoseSequence(body, hands), {})


def write(path: Path, samples: list[dict]) -> None:
    with wds.TarWriter(str(path)) as writer:
        for s in samples:
            writer.write(s)


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(0)
    # a.tar: truncated in the middle of the third sample's mp4 (members: json, mp4, pose.npz); the
    # cut sample is part of the broken tar (bad_tar), not a sample without a video
    write(root / "a.tar", [sample(f"a{i}", rng) for i in range(4)])
    with tarfile.open(root / "a.tar") as tar:
        names = [m.name for m in tar.getmembers()]
        cut = tar.getmember("a2.mp4").offset_data + 100
    assert names[:3] == ["a0.json", "a0.mp4", "a0.pose.npz"]
    with open(root / "a.tar", "r+b") as f:
        f.truncate(cut)
    # b.tar: one good sample, then a bad mp4, a truncated mp4, a missing pose, an unreadable pose
    good, bad_mp4, cut_mp4, no_pose, bad_pose = (sample(f"b{i}", rng) for i in range(5))
    bad_mp4["mp4"] = b"this is not a video" * 50
    cut_mp4["mp4"] = cut_mp4["mp4"][: len(cut_mp4["mp4"]) // 2]
    del no_pose["pose.npz"]
    bad_pose["pose.npz"] = b"PK\x03\x04 broken"
    write(root / "b.tar", [good, bad_mp4, cut_mp4, no_pose, bad_pose])
    # c.tar: garbage that is not a tar at all
    (root / "c.tar").write_bytes(b"\x00garbage" * 300)
    return root


EXPECTED = {"bad_tar": 2, "bad_video": 2, "missing_pose": 1, "bad_pose": 1}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_samples_are_skipped_and_counted(corrupt_dir, num_workers):
    dm = VideoPoseDataModule(
        str(corrupt_dir), num_frames=4, height=32, width=24, batch_size=1, num_workers=num_workers
    )
    loader = dm.train_dataloader()
    for _ in range(2):  # two epochs: the counters add up across epochs
        keys = sorted(k for batch in loader for k in batch.key)
        assert keys == ["a0", "a1", "b0"]
    if num_workers:
        # skips after a worker's last sample of an epoch reach the loader's state when the next
        # epoch starts (a worker reports its state with each batch it produces)
        iter(loader)
    assert dm.skip_counts() == {reason: 2 * n for reason, n in EXPECTED.items()}


def test_missing_shard_is_counted(corrupt_dir, tmp_path):
    rng = np.random.default_rng(1)
    write(tmp_path / "ok-000000.tar", [sample("ok", rng)])
    dm = VideoPoseDataModule(
        str(tmp_path / "ok-{000000..000001}.tar"), num_frames=4, height=32, width=24, batch_size=1
    )
    assert [k for b in dm.train_dataloader() for k in b.key] == ["ok"]
    assert dm.skip_counts() == {"missing_shard": 1}
