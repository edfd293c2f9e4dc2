"""Checkpoint writes are atomic: kill -9 at random moments while saving never leaves a last.ckpt
that fails to load (AtomicCheckpointIO: temp file in the same folder, fsync, os.replace)."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import torch

from unianimate.checkpoint_io import AtomicCheckpointIO

# ~8 MB payloads made in the parent: the forked writer only serialises (no intra-op thread pool,
# which must not be used after fork). Alternating them makes a torn or mixed file visible.
PAYLOADS = [torch.full((2_000_000,), 1.0), torch.full((2_000_000,), 2.0)]


def save_forever(path: str) -> None:
    io = AtomicCheckpointIO()
    step = 0
    while True:
        step += 1
        io.save_checkpoint({"global_step": step, "state_dict": {"w": PAYLOADS[step % 2]}}, path)


def test_kill_during_save_never_corrupts(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    context = multiprocessing.get_context("fork")  # no re-import per kill: ~10 kills in seconds
    rng = random.Random(0)
    killed_mid_write = 0
    last_step = 0
    for _ in range(10):
        writer = context.Process(target=save_forever, args=(str(path),), daemon=True)
        writer.start()
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        assert writer.exitcode == -signal.SIGKILL
        leftovers = list(tmp_path.glob(".last.ckpt.*.tmp"))
        killed_mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # as Lightning loads it
        step = checkpoint["global_step"]
        assert torch.equal(checkpoint["state_dict"]["w"], PAYLOADS[step % 2])
        last_step = step
        path.unlink()  # the next writer starts from scratch: each round checks a fresh file
    assert last_step > 0
    # The kills did land inside writes (a temp file was left behind), so the check means something.
    assert killed_mid_write >= 3, f"only {killed_mid_write} of 10 kills hit a write in progress"


def test_last_checkpoint_holds_the_final_step(demo_root, tmp_path: Path):
    """every_n_train_steps not dividing max_steps: last.ckpt must still be the final step (Lightning
    2.6 alone kept step 2 of 3)."""
    from demo_helpers import demo_overrides
    from lightning.pytorch.callbacks import ModelCheckpoint

    from unianimate.cli import main

    cli = main(
        demo_overrides(demo_root, tmp_path, max_steps=3) + ["--trainer.limit_val_batches=0"], run=False
    )
    keep = [c for c in cli.trainer.callbacks if type(c).__name__ not in ("ModelCheckpoint", "SampleVideos")]
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_last=True, save_top_k=-1
    )
    cli.trainer.callbacks = [*keep, checkpoints]
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    steps = {
        p.name: torch.load(p, weights_only=False)["global_step"] for p in (tmp_path / "ckpt").glob("*.ckpt")
    }
    assert steps["last.ckpt"] == 3 and steps["epoch=0-step=2.ckpt"] == 2
