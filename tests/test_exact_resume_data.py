"""Exact mid-epoch resume of the training loader, directly and through a Lightning checkpoint."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import webdataset as wds

from datamodules.format import PoseSequence, encode_sample
from datamodules.video_datamodule import VideoPoseDataModule

TENSORS = ("video", "pose", "ref_image", "ref_pose")


def write_shards(root: Path, shards: int = 4, per_shard: int = 4) -> str:
    rng = np.random.default_rng(0)
    for s in range(shards):
        with wds.TarWriter(str(root / f"train-{s:06d}.tar")) as writer:
            for i in range(per_shard):
                frames = rng.integers(0, 256, (16, 32, 24, 3), dtype=np.uint8)
                body = rng.uniform(0.2, 0.8, (16, 20, 3)).astype(np.float32)
                hands = rng.uniform(0.2, 0.8, (16, 2, 21, 3)).astype(np.float32)
                writer.write(encode_sample(f"s{s}_{i}", frames, 8.0, PoseSequence(body, hands), {}))
    return str(root / f"train-{{000000..{shards - 1:06d}}}.tar")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("resume"))


def make_dm(shards: str, **kw) -> VideoPoseDataModule:
    args = dict(num_frames=4, frame_interval=2, height=32, width=24, batch_size=2, seed=7)
    return VideoPoseDataModule(shards, resize="random_crop", **{**args, **kw})


def take(loader, n: int, epochs_iter: list) -> list[dict]:
    """n batches, starting a new epoch (a new ``iter(loader)``) whenever one ends."""
    out = []
    while len(out) < n:
        if not epochs_iter:
            epochs_iter.append(iter(loader))
        try:
            out.append(next(epochs_iter[0]))
        except StopIteration:
            epochs_iter.clear()
    return out


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert [x.key for x in a] == [y.key for y in b]
    for x, y in zip(a, b):
        assert all(torch.equal(getattr(x, k), getattr(y, k)) for k in TENSORS)


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)


# 16 samples, batch 2: 8 batches per epoch; stop at 3 (mid-epoch) and 7 (the next 4 cross into epoch 2)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [3, 7])
def test_resume_equals_uninterrupted(shards, num_workers, stop):
    more = 5
    reference = take(make_dm(shards, num_workers=num_workers).train_dataloader(), stop + more, [])
    first = make_dm(shards, num_workers=num_workers).train_dataloader()
    assert_same(take(first, stop, its := []), reference[:stop])
    state = roundtrip(first.state_dict())
    del its, first
    resumed = make_dm(shards, num_workers=num_workers).train_dataloader()
    resumed.load_state_dict(state)
    assert_same(take(resumed, more, []), reference[stop:])


@pytest.mark.parametrize("kw", [{"shuffle_buffer": 5}, {"resampled": True}])
def test_resume_with_buffer_or_resampling(shards, kw):
    reference = take(make_dm(shards, **kw).train_dataloader(), 12, [])
    first = make_dm(shards, **kw).train_dataloader()
    take(first, 5, [])
    resumed = make_dm(shards, **kw).train_dataloader()
    resumed.load_state_dict(roundtrip(first.state_dict()))
    assert_same(take(resumed, 7, []), reference[5:])


class KeyRecorder(L.LightningModule):
    """Records the keys of the batches it trains on; one parameter so the optimizer has work."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[str] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.extend(batch.key)
        return (self.weight - batch.video.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# (stop, num_workers, data args, trainer args); 8 batches per epoch unless limited
CASES = [
    (5, 0, {}, {}),  # mid-epoch: Lightning has prefetched batch 6
    (8, 0, {}, {}),  # at the epoch's end: nothing prefetched
    (5, 2, {}, {}),
    (4, 0, {"resampled": True}, {"limit_train_batches": 4}),  # epochs cut by the limit: no prefetch
    (6, 2, {"resampled": True}, {"limit_train_batches": 4}),
]


@pytest.mark.parametrize(("stop", "num_workers", "data", "limits"), CASES)
def test_lightning_checkpoint_resumes_the_data_position(shards, tmp_path, stop, num_workers, data, limits):
    """``--ckpt_path`` resume: the checkpoint carries the loader state and training continues with
    the very next batch, mid-epoch, at an epoch's end and across epochs cut by a batch limit."""

    def trainer(max_steps: int, **kw) -> L.Trainer:
        return L.Trainer(
            max_steps=max_steps,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            **limits,
            **kw,
        )

    def dm() -> VideoPoseDataModule:
        return make_dm(shards, num_workers=num_workers, **data)

    full = KeyRecorder()
    trainer(11).fit(full, datamodule=dm())
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=stop, save_top_k=-1
    )
    part = KeyRecorder()
    trainer(stop, callbacks=[checkpoint]).fit(part, datamodule=dm())
    (path,) = tmp_path.glob(f"*step={stop}.ckpt")
    saved = torch.load(path, weights_only=False)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # the StatefulDataLoader's state
    resumed = KeyRecorder()
    trainer(11).fit(resumed, datamodule=dm(), ckpt_path=str(path))
    assert part.seen == full.seen[: 2 * stop]
    assert resumed.seen == full.seen[2 * stop :]
