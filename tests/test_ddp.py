"""DDP with 2 CPU processes (gloo) on the demo config: shards split across ranks without overlap,
EMA identical on both ranks, and the checkpoint resumes under DDP."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scale_helpers import environment, fit_command, make_data, records, run, write_overlay

DDP = ("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("ddp_data"), num_train=16)  # 2 shards: one per rank


@pytest.mark.slow
def test_ddp_two_ranks(data, tmp_path):
    run_dir, record = tmp_path / "run", tmp_path / "steps.jsonl"
    # Not resampled: each rank reads its own shards (ShardStream splits the shard list by rank).
    overlay = write_overlay(data, run_dir, 3, 3, {"data.init_args.resampled": False})
    run(fit_command(overlay, *DDP), environment(data, record), tmp_path / "fit.log", timeout=300)

    keys = [{k for r in records(record, rank) for k in r["keys"]} for rank in (0, 1)]
    assert all(len(k) == 3 for k in keys), keys  # 3 steps of batch 1 on each rank
    assert not keys[0] & keys[1], f"ranks shared samples: {keys[0] & keys[1]}"
    shard_of = {k: int(k.split("-")[1]) // 8 for k in keys[0] | keys[1]}  # shard s: videos 8s .. 8s + 7
    assert {shard_of[k] for k in keys[0]}.isdisjoint({shard_of[k] for k in keys[1]})

    ema = [torch.load(f"{record}.ema{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert ema[0]["num_updates"] == ema[1]["num_updates"] == 3
    assert all(torch.equal(ema[0]["shadow"][n], ema[1]["shadow"][n]) for n in ema[0]["shadow"])
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3 and saved["ema"]["num_updates"] == 3

    resume = write_overlay(data, run_dir, 4, 3, {"data.init_args.resampled": False})
    run(
        fit_command(resume, *DDP, "--ckpt_path", "last"),
        environment(data, record),
        tmp_path / "resume.log",
        300,
    )
    for rank in (0, 1):
        resumed = records(record, rank)[3:]
        assert [r["step"] for r in resumed] == [4]
        assert resumed[0]["keys"][0] not in keys[rank]  # the data position continued on each rank


@pytest.mark.slow
def test_ddp_test_metrics_cover_every_rank(data, tmp_path):
    """``unianimate test`` on 2 ranks: each generates its own shard's videos; the metrics and the
    files are those of all of them (written once, by rank 0)."""
    run_dir = tmp_path / "run"
    extra = {
        "data.init_args.test_shards": str(data / "data" / "train"),  # 2 shards: one per rank
        "data.init_args.test_num_frames": 4,
        "trainer.limit_test_batches": 2,
        "evaluation.protocol.frames_per_clip": 4,
        "evaluation.random_metric_weights": str(tmp_path / "metric_weights"),
        "model.sampler.init_args.num_steps": 2,
        "model.long_video.segment_frames": 4,
    }
    command = fit_command(write_overlay(data, run_dir, 1, 1, extra), *DDP)
    command[command.index("fit")] = "test"
    command.append("--allow_random_weights=true")  # random weights on purpose: the metrics are what is tested
    run(command, environment(data, tmp_path / "record"), tmp_path / "test.log", timeout=300)
    results = json.loads((run_dir / "test_metrics.json").read_text())
    assert results["num_videos"] == 4 and results["num_frames"] == 16  # 2 ranks x 2 videos x 4 frames
    assert results["fvd_samples"] == 4 and math.isfinite(results["fvd"])
    assert all(math.isfinite(results[k]) for k in ("l1", "psnr", "ssim", "lpips"))
    assert (run_dir / "test_metrics.md").read_text().count("| L1") == 1
