"""Training data that never decodes stops with one error instead of spinning forever; a truncated
tar is counted as a truncated tar (real files: random bytes, tars of corrupt mp4s, cut tars)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_corrupt_shards import sample, write

from datamodules.stream import StreamError
from datamodules.video_datamodule import VideoPoseDataModule

pytestmark = pytest.mark.timeout(120)


def _datamodule(shards: Path, **kwargs) -> VideoPoseDataModule:
    return VideoPoseDataModule(str(shards), num_frames=4, height=32, width=24, batch_size=1, **kwargs)


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_shards")
    (root / "noise").mkdir()
    (root / "noise" / "x.tar").write_bytes(np.random.default_rng(0).bytes(20_000))  # not a tar
    (root / "bad_mp4").mkdir()
    rng = np.random.default_rng(1)
    samples = [sample(f"v{i}", rng) for i in range(3)]
    for s in samples:
        s["mp4"] = rng.bytes(3000)  # a tar whose every video is corrupt
    write(root / "bad_mp4" / "x.tar", samples)
    return {"noise": root / "noise", "bad_mp4": root / "bad_mp4"}


@pytest.mark.parametrize("kind", ["noise", "bad_mp4"])
@pytest.mark.parametrize("resampled", [True, False])
def test_a_stream_where_nothing_decodes_stops_with_one_error(bad_shards, kind, resampled):
    dm = _datamodule(bad_shards[kind], resampled=resampled, max_failed_tries=30)
    loader = dm.train_dataloader()
    with pytest.raises(StreamError) as caught:
        for _epoch in range(1000):  # resampled: one endless epoch; otherwise empty epochs
            for _ in loader:
                pass
    message = str(caught.value)
    assert "\n" not in message and "no usable sample in 30 tries in a row" in message
    assert str(bad_shards[kind] / "x.tar") in message  # names the shard
    assert ("bad_tar=30" if kind == "noise" else "bad_video=30") in message  # and the skip counts


def test_the_default_bound_applies(bad_shards):
    with pytest.raises(StreamError, match="200 tries"):
        for _ in _datamodule(bad_shards["noise"], resampled=True).train_dataloader():
            pass


def test_a_failure_in_a_worker_reaches_the_main_process(bad_shards):
    loader = _datamodule(
        bad_shards["bad_mp4"], resampled=True, num_workers=1, max_failed_tries=10
    ).train_dataloader()
    with pytest.raises(StreamError, match="no usable sample in 10 tries"):
        next(iter(loader))


def test_good_samples_reset_the_count(tmp_path):
    """Bad samples between good ones never add up to a failure."""
    rng = np.random.default_rng(2)
    samples = [sample(f"s{i}", rng) for i in range(12)]
    for s in samples[1::2]:
        s["mp4"] = b"not a video"
    write(tmp_path / "x.tar", samples)
    dm = _datamodule(tmp_path, max_failed_tries=2)
    loader = dm.train_dataloader()
    for _ in range(3):
        assert len([k for b in loader for k in b.key]) == 6
    assert dm.skip_counts() == {"bad_video": 18}


@pytest.fixture(scope="module")
def whole_tar(tmp_path_factory) -> tuple[bytes, list[tarfile.TarInfo]]:
    path = tmp_path_factory.mktemp("whole") / "x.tar"
    write(path, [sample(f"a{i}", np.random.default_rng(3)) for i in range(3)])
    with tarfile.open(path) as tar:
        return path.read_bytes(), tar.getmembers()


@pytest.mark.parametrize(
    "where, keys",
    [
        ("in_a_header", ["a0"]),  # 100 bytes into a1's first header
        ("between_members", ["a0"]),  # right after a0's last member
        ("in_member_data", ["a0"]),  # inside a1.mp4: a1 is part of the damage, not "missing_pose"
        ("in_the_last_member", ["a0", "a1"]),
    ],
)
def test_a_truncated_tar_counts_as_bad_tar(whole_tar, tmp_path, where, keys):
    data, members = whole_tar
    a1_header = members[3].offset
    cut = {
        "in_a_header": a1_header + 100,
        "between_members": a1_header,
        "in_member_data": members[4].offset_data + 100,
        "in_the_last_member": members[-1].offset_data + 10,
    }[where]
    (tmp_path / "x.tar").write_bytes(data[:cut])
    dm = _datamodule(tmp_path)
    assert [k for b in dm.train_dataloader() for k in b.key] == keys
    assert dm.skip_counts() == {"bad_tar": 1}
