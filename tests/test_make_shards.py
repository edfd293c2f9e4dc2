"""tools/make_shards.py and datamodules/shard_builder.py on small generated videos."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds

from datamodules.format import PoseSequence, decode_mp4, encode_mp4
from datamodules.shard_builder import BuildSettings, build_shards

ROOT = Path(__file__).resolve().parents[1]
DANCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dance_source.mp4"
LENGTHS = {"ubc/a": 20, "ubc/b": 24, "tiktok/00001": 18}


def _frames(n: int, seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.zeros((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, 8 + i % 20 : 24 + i % 20, 10:30] = rng.integers(0, 255, 3)
        frames[i, ..., 2] = rng.integers(0, 255, (height, width))  # noise makes the mp4 big
    return frames


def _pose(n: int, seed: int) -> PoseSequence:
    rng = np.random.default_rng(seed)
    return PoseSequence(rng.random((n, 20, 3), dtype=np.float32), rng.random((n, 2, 21, 3), dtype=np.float32))


@pytest.fixture
def videos(tmp_path: Path) -> tuple[Path, Path]:
    root, poses = tmp_path / "videos", tmp_path / "poses"
    (root / "ubc").mkdir(parents=True)
    poses.mkdir()
    for seed, (name, n) in enumerate(LENGTHS.items()):
        if name.startswith("ubc"):
            (root / f"{name}.mp4").write_bytes(encode_mp4(_frames(n, seed), fps=30))
        else:  # TikTok layout: <video>/images/0000.png ...
            images = root / name / "images"
            images.mkdir(parents=True)
            for i, frame in enumerate(_frames(n, seed)):
                cv2.imwrite(str(images / f"{i:04d}.png"), frame[..., ::-1])
        (poses / f"{name.replace('/', '_')}.pose.npz").write_bytes(_pose(n, seed).to_npz_bytes())
    (root / "ubc" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "ubc" / "short.mp4").write_bytes(encode_mp4(_frames(4, 9), fps=30))
    (poses / "ubc_short.pose.npz").write_bytes(_pose(4, 9).to_npz_bytes())
    return root, poses


def _read_shards(out: Path, manifest: dict) -> dict[str, dict]:
    urls = [str(out / s["name"]) for s in manifest["shards"]]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}


def _build(root: Path, poses: Path, out: Path, **kwargs) -> dict:
    settings = BuildSettings("precomputed", min_frames=8)
    return build_shards(root, out, settings, pose_dir=poses, progress=False, **kwargs)


def test_shards_manifest_and_skips(videos: tuple[Path, Path], tmp_path: Path) -> None:
    root, poses = videos
    out = tmp_path / "shards"
    cap = 60_000
    manifest = _build(root, poses, out, max_shard_bytes=cap, workers=2)
    assert manifest["samples"] == 3 and manifest["frames"] == sum(LENGTHS.values())
    assert set(manifest["videos"]) == set(LENGTHS)
    assert manifest["skipped"]["ubc/short"] == "too short: 4 frames < 8"
    assert manifest["skipped"]["ubc/corrupt"].startswith("InvalidDataError")
    assert len(manifest["shards"]) >= 2, "the cap should have split the shards"
    for shard in manifest["shards"]:
        path = out / shard["name"]
        assert path.stat().st_size <= cap and shard["bytes"] == path.stat().st_size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
    assert json.loads((out / "manifest.json").read_text()) == manifest

    samples = _read_shards(out, manifest)
    assert sorted(samples) == sorted(n.replace("/", "_") for n in LENGTHS)
    for seed, (name, n) in enumerate(LENGTHS.items()):
        sample = samples[name.replace("/", "_")]
        pose = PoseSequence.from_npz_bytes(sample["pose.npz"])
        np.testing.assert_array_equal(pose.body, _pose(n, seed).body)
        frames = decode_mp4(sample["mp4"])
        assert frames.shape == (n, 48, 64, 3)
        assert np.abs(frames[..., :2].astype(int) - _frames(n, seed)[..., :2]).mean() < 8
        meta = json.loads(sample["json"])
        assert meta["frames"] == n and meta["video"] == name and meta["fps"] == 30


def test_rerun_resumes_after_a_crash(videos: tuple[Path, Path], tmp_path: Path) -> None:
    root, poses = videos
    out = tmp_path / "shards"
    tiktok = root / "tiktok"
    tiktok.rename(tmp_path / "later")  # first run: the mp4 files only
    first = _build(root, poses, out, max_shard_bytes=60_000)
    assert set(first["videos"]) == {"ubc/a", "ubc/b"}
    hashes = {s["name"]: s["sha256"] for s in first["shards"]}
    (tmp_path / "later").rename(tiktok)
    # A crash while the last shard was open: its "shard" line never reached the log.
    log = out / "progress.jsonl"
    lines = log.read_text().splitlines()
    lost = json.loads(lines[-1])
    assert lost["event"] == "shard"
    log.write_text("\n".join(lines[:-1]) + "\n")

    second = _build(root, poses, out, max_shard_bytes=60_000)
    assert second["samples"] == 3 and set(second["videos"]) == set(LENGTHS)
    assert set(second["skipped"]) == {"ubc/corrupt", "ubc/short"}
    kept = {
        s["name"]: s["sha256"] for s in second["shards"] if s["name"] in hashes and s["name"] != lost["name"]
    }
    assert kept == {k: v for k, v in hashes.items() if k != lost["name"]}, "closed shards are left alone"
    samples = _read_shards(out, second)
    assert sorted(samples) == sorted(n.replace("/", "_") for n in LENGTHS)
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(s["name"] for s in second["shards"])

    third = _build(root, poses, out, max_shard_bytes=60_000)  # nothing left to do
    assert third == second


def test_settings_change_is_refused(videos: tuple[Path, Path], tmp_path: Path) -> None:
    root, poses = videos
    _build(root, poses, tmp_path / "shards")
    with pytest.raises(ValueError, match="was built with"):
        build_shards(root, tmp_path / "shards", BuildSettings("precomputed", min_frames=2), pose_dir=poses)


def test_cli_max_side_and_workers(videos: tuple[Path, Path], tmp_path: Path) -> None:
    root, poses = videos
    out = tmp_path / "shards"
    command = [sys.executable, str(ROOT / "tools" / "make_shards.py"), str(root), str(out)]
    command += ["--pose-backend", "precomputed", "--pose-dir", str(poses), "--workers", "2"]
    command += ["--min-frames", "8", "--max-side", "32"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["samples"] == 3 and len(manifest["skipped"]) == 2
    for sample in _read_shards(out, manifest).values():
        assert decode_mp4(sample["mp4"]).shape[1:3] == (24, 32)  # 48x64 -> longer side 32, even


@pytest.mark.slow
def test_mediapipe_shards_from_the_dance_video(tmp_path: Path) -> None:
    if not DANCE.is_file():
        pytest.skip(f"example video absent: {DANCE}")
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe not installed (pip install -e '.[pose]' in a numpy<2 environment)")
    root = tmp_path / "videos"
    root.mkdir()
    (root / "dance.mp4").symlink_to(DANCE)
    manifest = build_shards(
        root, tmp_path / "shards", BuildSettings("mediapipe", max_side=256), progress=False
    )
    assert manifest["samples"] == 1 and manifest["frames"] == 150 and not manifest["skipped"]
    sample = _read_shards(tmp_path / "shards", manifest)["dance"]
    pose = PoseSequence.from_npz_bytes(sample["pose.npz"])
    assert (pose.body[:, 1, 2] > 0.3).mean() >= 0.95
    assert decode_mp4(sample["mp4"], [0]).shape == (1, 256, 160, 3)
    # ... and the shard set trains the demo model (the README's command, shortened).
    from unianimate.cli import main  # lazy: the shard tests above need no model
    from unianimate.models.frozen import make_tiny_clip

    # Stand-ins are only generated inside the demo cache: a path given explicitly must exist.
    make_tiny_clip(tmp_path / "tiny_clip")
    shards, run = str(tmp_path / "shards"), tmp_path / "run"
    cli = main(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "demo.yaml"),
            f"--data.init_args.train_shards={shards}",
            f"--data.init_args.val_shards={shards}",
            "--data.init_args.synthetic_root=null",
            f"--data.init_args.latent_cache_dir={tmp_path / 'latents'}",
            "--data.init_args.batch_size=1",
            "--data.init_args.num_frames=4",
            "--model.long_video.segment_frames=4",
            "--model.sampler.init_args.num_steps=2",
            f"--model.encoders.init_args.clip_path={tmp_path / 'tiny_clip'}",
            "--model.encoders.init_args.make_tiny_if_missing=false",
            f"--evaluation.random_metric_weights={tmp_path / 'metric_weights'}",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={run}",
            f"--trainer.logger.init_args.save_dir={run}",
        ]
    )
    assert cli.trainer.global_step == 3
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert (run / "version_0" / "samples" / "final.mp4").is_file()


def _make_shards(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "tools" / "make_shards.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_exits_non_zero_when_nothing_is_written(videos: tuple[Path, Path], tmp_path: Path) -> None:
    """Before: exit 0 for a missing input folder and for zero samples written."""
    root, poses = videos
    missing = _make_shards(
        str(tmp_path / "nope"), str(tmp_path / "a"), "--pose-backend", "precomputed", "--pose-dir", str(poses)
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert (
        missing.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: input_dir: no folder at '{tmp_path / 'nope'}'")
    )
    (tmp_path / "wrong_poses").mkdir()  # a wrong --pose-dir: every video is skipped
    nothing = _make_shards(
        str(root),
        str(tmp_path / "b"),
        "--pose-backend",
        "precomputed",
        "--pose-dir",
        str(tmp_path / "wrong_poses"),
    )
    assert nothing.returncode == 1, nothing.stderr[-2000:]
    last = nothing.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: no samples written to '{tmp_path / 'b'}': 5 video(s) skipped (FileNotFoundError"
    ), last


def test_rerun_says_what_it_reuses_and_refuses_another_pose_dir(
    videos: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    """Before: pose_dir was not among the compared settings, so a rerun with the right --pose-dir
    kept every video the wrong one had skipped, without a word."""
    root, poses = videos
    (tmp_path / "wrong_poses").mkdir()
    _build(root, tmp_path / "wrong_poses", tmp_path / "shards")
    with pytest.raises(ValueError, match=r"was built with pose_dir=.*wrong_poses.* \(now .*poses'\)"):
        _build(root, poses, tmp_path / "shards")
    first = _build(root, poses, tmp_path / "good")
    capsys.readouterr()
    assert _build(root, poses, tmp_path / "good") == first
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"resuming {tmp_path / 'good'}: reusing 1 closed shard(s) with 3 video(s); 2 video(s) skipped "
        "before stay skipped (InvalidDataError: 1, too short: 1); 0 unclosed shard(s) deleted; 0 video(s) to do"
    )
