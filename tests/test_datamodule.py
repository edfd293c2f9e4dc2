"""VideoPoseDataModule: batch contract, determinism, sharding, crop, skipping, resampling, latent cache."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from datamodules.clips import apply_box_points, crop_box
from datamodules.colour import yuv420_to_rgb
from datamodules.format import PoseSequence, encode_sample
from datamodules.pose_render import RELEASE_PALETTE, colourize
from datamodules.video_datamodule import VideoPoseDataModule
from unianimate.batch import VideoBatch


def random_pose(rng: np.random.Generator, frames: int) -> PoseSequence:
    body = rng.uniform(0.2, 0.8, (frames, 20, 3)).astype(np.float32)
    body[..., 2] = 1.0
    hands = rng.uniform(0.2, 0.8, (frames, 2, 21, 3)).astype(np.float32)
    return PoseSequence(body, hands)


def write_shard(
    path: Path, keys: list[str], frames: int = 24, height: int = 32, width: int = 24, seed: int = 0
):
    rng = np.random.default_rng(seed)
    with wds.TarWriter(str(path)) as writer:
        for key in keys:
            video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
            writer.write(encode_sample(key, video, 8.0, random_pose(rng, frames), {"source": "test"}))


def make_shards(root: Path, split: str, shards: int, per_shard: int, **kw) -> str:
    for s in range(shards):
        keys = [f"{split}{s}_{i}" for i in range(per_shard)]
        write_shard(root / f"{split}-{s:06d}.tar", keys, seed=s + (100 if split == "val" else 0), **kw)
    return str(root / f"{split}-{{000000..{shards - 1:06d}}}.tar")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("shards")
    return {"train": make_shards(root, "train", 4, 3), "val": make_shards(root, "val", 2, 2)}


def datamodule(train: str, **kw) -> VideoPoseDataModule:
    args = dict(num_frames=8, frame_interval=2, height=32, width=24, batch_size=2)
    return VideoPoseDataModule(train, **{**args, **kw})


def epoch_batches(dm: VideoPoseDataModule) -> list[dict]:
    return list(dm.train_dataloader())


def float_batch(loader) -> dict:
    """The first batch as the LightningModule sees it (a Trainer applies ``on_after_batch_transfer``)."""
    return VideoPoseDataModule.to_float(next(iter(loader)))


def test_batch_contract(shards):
    raw = epoch_batches(datamodule(shards["train"]))
    assert len(raw) == 6  # 12 videos, batch 2
    # The loader's contract: uint8 pictures as YUV 4:2:0 planes (3H/2 rows), skeletons as palette indices.
    shapes = {
        "video": (2, 8, 48, 24),
        "ref_image": (2, 48, 24),
        "pose": (2, 8, 32, 24),
        "ref_pose": (2, 32, 24),
    }
    for key, shape in shapes.items():
        assert getattr(raw[0], key).shape == shape and getattr(raw[0], key).dtype == torch.uint8
    assert raw[0].video_colour.tolist() == [0, 0]  # BT.601, limited range: what x264 was given
    batches = [VideoPoseDataModule.to_float(b) for b in raw]
    b = batches[0]
    assert b.video.shape == (2, 3, 8, 32, 24) and b.video.dtype == torch.float32
    assert b.pose.shape == (2, 3, 8, 32, 24) and b.pose.dtype == torch.float32
    assert b.ref_image.shape == (2, 3, 32, 24) and b.ref_pose.shape == (2, 3, 32, 24)
    assert isinstance(b.key, list) and all(isinstance(k, str) for k in b.key)
    for batch in batches:
        assert -1.0 <= batch.video.min() and batch.video.max() <= 1.0
        assert -1.0 <= batch.ref_image.min() and batch.ref_image.max() <= 1.0
        assert 0.0 <= batch.pose.min() and batch.pose.max() <= 1.0
        assert batch.pose.amax(dim=(1, 3, 4)).gt(0).all()  # every frame has a skeleton drawn
    keys = [k for batch in batches for k in batch.key]
    assert sorted(keys) == sorted(f"train{s}_{i}" for s in range(4) for i in range(3))
    # RGB of the planes, in the values of the former in-worker conversion x / 127.5 - 1
    for key in ("video", "ref_image"):
        rgb = yuv420_to_rgb(getattr(raw[0], key), raw[0].video_colour)
        assert torch.equal(getattr(b, key), rgb.float().div_(127.5).sub_(1.0))
    assert b.video_colour is None
    # the skeletons: the release's RGB pictures (channels reversed) of the palette indices, over 255
    rgb = torch.from_numpy(colourize(raw[0].pose.numpy(), release_channel_order=True))
    assert torch.equal(b.pose, rgb.movedim(-1, 1).float() / 255.0)
    assert torch.equal(
        b.ref_pose, torch.from_numpy(colourize(raw[0].ref_pose.numpy())).movedim(-1, 1) / 255.0
    )
    assert VideoPoseDataModule.to_float(b).video is b.video  # float passes through


def test_uint8_to_float_table_is_exact():
    values = torch.arange(768, dtype=torch.int64).remainder(256).to(torch.uint8).view(1, 2, 8, 16, 3)
    indices = values[..., 0]  # every palette index
    batch = VideoPoseDataModule.to_float(
        VideoBatch(pose=indices, ref_pose=indices[:, 0], video=values, key=["k"])
    )
    channels_first = values.permute(0, 4, 1, 2, 3)
    assert torch.equal(batch.video, channels_first.float().div_(127.5).sub_(1.0))
    assert batch.video.shape == (1, 3, 2, 8, 16) and batch.video.is_contiguous()
    palette = torch.from_numpy(RELEASE_PALETTE)[indices.long()].permute(0, 4, 1, 2, 3)
    assert torch.equal(batch.pose, palette.float() / 255.0) and batch.pose.is_contiguous()
    assert batch.video.min() == -1 and batch.video.max() == 1 and batch.key == ["k"]


def test_evaluation_batches_become_float_in_the_transfer_hook(shards):
    dm = datamodule(shards["train"], val_shards=shards["val"])
    raw = next(iter(dm.val_dataloader()))
    assert raw.video.dtype == torch.uint8 and raw.pose.dtype == torch.uint8  # as decoded and drawn
    batch = dm.on_after_batch_transfer(raw, 0)
    assert all(getattr(batch, k).dtype == torch.float32 for k in ("video", "pose", "ref_image", "ref_pose"))
    assert -1.0 <= batch.video.min() and batch.video.max() <= 1.0


def test_clip_is_strided_frames_of_the_video(tmp_path):
    # frames whose grey level encodes the frame index: the clip must be start + 2 * arange(8)
    frames = np.repeat(np.arange(24, dtype=np.uint8)[:, None, None, None] * 10, 32 * 24 * 3).reshape(
        24, 32, 24, 3
    )
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(tmp_path / "s.tar")) as writer:
        writer.write(encode_sample("grey", frames, 8.0, random_pose(rng, 24), {}))
    dm = datamodule(str(tmp_path / "s.tar"), batch_size=1)
    video = float_batch(dm.train_dataloader()).video[0]
    levels = ((video.mean(dim=(0, 2, 3)) + 1) * 127.5 / 10).round().long()
    assert torch.equal(levels - levels[0], 2 * torch.arange(8))


def test_deterministic_for_a_seed(shards):
    first = epoch_batches(datamodule(shards["train"], seed=3))
    again = epoch_batches(datamodule(shards["train"], seed=3))
    other = epoch_batches(datamodule(shards["train"], seed=4))
    for a, b in zip(first, again):
        assert a.key == b.key
        assert all(
            torch.equal(getattr(a, k), getattr(b, k)) for k in ("video", "pose", "ref_image", "ref_pose")
        )
    assert [b.key for b in first] != [b.key for b in other]


def test_epochs_reshuffle_shards(shards):
    loader = datamodule(shards["train"], seed=1).train_dataloader()
    epochs = [[k for b in loader for k in b.key] for _ in range(3)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    assert len({tuple(e) for e in epochs}) > 1


def test_train_and_val_are_split_by_shard(shards):
    dm = datamodule(shards["train"], val_shards=shards["val"], val_batch_size=1)
    train = {k for b in dm.train_dataloader() for k in b.key}
    val = [k for b in dm.val_dataloader() for k in b.key]
    assert len(val) == 4 and all(k.startswith("val") for k in val)
    assert train.isdisjoint(val) and all(k.startswith("train") for k in train)
    # validation draws the same clips every pass
    again = list(dm.val_dataloader())
    assert torch.equal(next(iter(dm.val_dataloader())).video, again[0].video)


def test_split_by_worker_and_node_no_overlap(shards):
    keys = [k for b in datamodule(shards["train"], num_workers=2).train_dataloader() for k in b.key]
    assert len(keys) == len(set(keys)) == 12
    ranks = []
    for rank in range(2):
        dataset = datamodule(shards["train"]).train_dataset()
        dataset.rank, dataset.world_size = rank, 2
        ranks.append({s["key"] for s in dataset})
    assert ranks[0].isdisjoint(ranks[1]) and len(ranks[0] | ranks[1]) == 12


def test_aspect_preserving_crop(tmp_path):
    # landscape 32 x 48 source, 32 x 24 target: centre crop keeps columns 12 .. 35 unscaled
    frames = np.zeros((12, 32, 48, 3), np.uint8)
    frames[:, :, 12:36] = 200
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(tmp_path / "wide.tar")) as writer:
        writer.write(encode_sample("wide", frames, 8.0, random_pose(rng, 12), {}))
    crop = float_batch(datamodule(str(tmp_path / "wide.tar"), num_frames=4, batch_size=1).train_dataloader())
    stretch = float_batch(
        datamodule(
            str(tmp_path / "wide.tar"), num_frames=4, batch_size=1, resize="stretch"
        ).train_dataloader()
    )
    assert crop.video[..., 2:-2].min() > 0.4  # all bright: the crop is the bright band
    assert stretch.video[..., :2].max() < -0.6  # stretch squeezes in the dark sides
    box = crop_box(32, 48, 32, 24, "center_crop", np.random.default_rng(0))
    assert (box.scaled_h, box.scaled_w, box.top, box.left) == (32, 48, 0, 12)
    points = np.array([[0.25, 0.5, 1.0], [0.5, 0.25, 1.0], [0.75, 1.0, 0.2]], np.float32)
    np.testing.assert_allclose(apply_box_points(points, box), [[0, 0.5, 1], [0.5, 0.25, 1], [1, 1, 0.2]])
    box = crop_box(64, 48, 32, 32, "random_crop", np.random.default_rng(1))  # portrait -> square
    assert (box.scaled_h, box.scaled_w, box.left) == (43, 32, 0) and 0 <= box.top <= 11


def test_too_short_videos_are_skipped_and_counted(tmp_path):
    write_shard(tmp_path / "a.tar", ["long0", "long1"], frames=24)
    write_shard(tmp_path / "b.tar", ["short0", "short1", "short2"], frames=10)  # span is 15
    dm = datamodule(str(tmp_path), batch_size=1)
    keys = [k for b in dm.train_dataloader() for k in b.key]
    assert sorted(keys) == ["long0", "long1"]
    assert dm.skip_counts() == {"too_short": 3}


def test_resampled_is_infinite(shards):
    loader = datamodule(shards["train"], resampled=True).train_dataloader()
    batches = list(itertools.islice(loader, 20))  # 40 samples from a 12-sample dataset
    keys = [k for b in batches for k in b.key]
    assert len(keys) == 40 and len(set(keys)) <= 12


def test_latent_cache_batches(tmp_path):
    rng = np.random.default_rng(0)

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    with wds.TarWriter(str(tmp_path / "cache.tar")) as writer:
        for i in range(2):
            writer.write(
                {
                    "__key__": f"cached{i}",
                    "latents.npy": npy(rng.standard_normal((20, 4, 4, 3)).astype(np.float16)),
                    "clip.npy": npy(rng.standard_normal((20, 16)).astype(np.float16)),
                    "pose.npz": random_pose(rng, 20).to_npz_bytes(),
                    "json": json.dumps({"height": 64, "width": 48, "frames": 20}).encode(),
                }
            )
    dm = datamodule(str(tmp_path / "cache.tar"), use_latent_cache=True)
    raw = next(iter(dm.train_dataloader()))
    assert raw.pose.shape == (2, 8, 32, 24) and raw.pose.dtype == torch.uint8  # palette indices
    batch = VideoPoseDataModule.to_float(raw)
    assert batch.latent.shape == (2, 4, 8, 4, 3) and batch.latent.dtype == torch.float32
    assert batch.ref_latent.shape == (2, 4, 4, 3) and batch.clip_embed.shape == (2, 16)
    assert batch.pose.shape == (2, 3, 8, 32, 24) and batch.ref_pose.shape == (2, 3, 32, 24)
    assert batch.video is None and sorted(batch.key) == ["cached0", "cached1"]
    with pytest.raises(ValueError, match="latent cache"):
        datamodule(str(tmp_path / "cache.tar"), use_latent_cache=True, resize="random_crop")


def test_pose_jitter_moves_the_driving_poses_only(shards):
    plain = next(iter(datamodule(shards["train"]).train_dataloader()))
    jittered = next(iter(datamodule(shards["train"], pose_jitter=True).train_dataloader()))
    assert plain.key == jittered.key and torch.equal(plain.video, jittered.video)
    assert torch.equal(plain.ref_pose, jittered.ref_pose)
    assert not torch.equal(plain.pose, jittered.pose)


def test_prepare_data_generates_missing_demo_data(tmp_path, monkeypatch):
    import datamodules.synthetic

    calls = []
    monkeypatch.setattr(datamodules.synthetic, "ensure_synthetic_dataset", lambda root: calls.append(root))
    datamodule(str(tmp_path / "demo" / "train"), synthetic_root=str(tmp_path / "demo")).prepare_data()
    assert calls == [str(tmp_path / "demo")]
    make_shards(tmp_path, "train", 1, 1)
    datamodule(str(tmp_path / "train-000000.tar"), synthetic_root=str(tmp_path / "demo")).prepare_data()
    datamodule(str(tmp_path / "train-000000.tar")).prepare_data()
    assert len(calls) == 1  # shards present (or no synthetic_root): nothing generated


def test_evaluation_stream_restarts_after_a_pass_cut_short(shards):
    """limit_val_batches stops a validation early; the next validation must see the same clips."""
    loader = datamodule(shards["train"], val_shards=shards["train"]).val_dataloader()
    first = next(iter(loader)).key
    for _ in range(3):
        assert next(iter(loader)).key == first
    assert sum(len(b.key) for b in loader) == 12


def test_crop_without_resize_equals_resize_then_crop():
    import cv2

    from datamodules.clips import CropBox, apply_box_frames

    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    box = CropBox(40, 30, 4, 2, 32, 24)  # the source size: the shortcut skips cv2.resize
    resized = np.stack([cv2.resize(f, (30, 40), interpolation=cv2.INTER_LINEAR)[4:36, 2:26] for f in frames])
    assert np.array_equal(apply_box_frames(frames, box), resized)


def test_evaluation_references_are_not_target_frames() -> None:
    """Held-out clips take the reference from frames outside the clip, so copying it is a true floor;
    training draws it from the whole video (SPEC §5)."""
    import numpy as np

    from datamodules.clips import ClipExample

    evaluation = ClipExample(8, 1, 64, 48, reference_outside_clip=True)
    training = ClipExample(8, 1, 64, 48)
    inside = 0
    for seed in range(200):
        clip, ref = evaluation._indices(24, np.random.default_rng(seed))
        assert 0 <= ref < 24 and ref not in clip
        clip, ref = training._indices(24, np.random.default_rng(seed))
        inside += ref in clip
    assert inside > 0
    clip, ref = evaluation._indices(8, np.random.default_rng(0))  # no frame outside: any frame
    assert ref in clip


def test_clip_lengths_per_stage(shards):
    """Training, validation (and its sample videos) and test clips can differ in length."""
    dm = datamodule(
        shards["train"], val_shards=shards["val"], num_frames=4, val_num_frames=6, test_num_frames=8
    )
    lengths = [
        next(iter(loader)).num_frames
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    ]
    assert lengths == [4, 6, 8]
    assert next(iter(datamodule(shards["train"], val_shards=shards["val"]).val_dataloader())).num_frames == 8
