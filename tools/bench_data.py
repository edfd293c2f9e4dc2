"""Data-loading throughput: our shards vs per-frame PNG folders (the format peers use), side by side.

Both hold the same videos at the training size (H x W = 768 x 512, the release's): the shards as
mp4 + keypoints, skeletons rendered on the fly by ``VideoPoseDataModule``; the PNG folders as one
PNG per frame plus pre-rendered pose PNGs, read with PIL. Each side loads random 16-frame clips with
a random reference frame through a DataLoader with the same worker count and hands over uint8
pictures as it holds them, for the device to make the float RGB batch: the shards YUV 4:2:0 video
and palette-index skeletons (the training loader's contract, converted by
``VideoPoseDataModule.on_after_batch_transfer``), the PNG folders RGB video and skeletons, channels
last (neither side pays for a float pass or a transpose on the CPU). The content is the real
example dance video (``shared/data``) with synthetic skeletons (their drawing cost is what
matters); without it, synthetic videos.

    python tools/bench_data.py --workers 2 --clips 32 --repeats 2

Rows: shards as written now (a keyframe every 16 frames, x264 tune fastdecode), the same videos as
shards were written before (libx264's default keyframe interval 250, default tune), latent-cache shards, PNG folders, run in turn
``--repeats`` times. Columns: the best clips/s after warm-up; the least CPU ms per clip of the main
process and the workers together over the timed batches (other jobs on the machine barely move it,
unlike clips/s). Then an in-process CPU breakdown by stage, one thread, as in a worker.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import datamodules.clips as clips
from datamodules.format import decode_mp4, encode_sample
from datamodules.pose_render import render_pose_sequence
from datamodules.synthetic import make_synthetic_video
from datamodules.video_datamodule import VideoPoseDataModule

DANCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dance_source.mp4"
SHARD_ROWS = {"shards, GOP 16, fastdecode": "shards", "shards as before (GOP 250)": "shards_gop250"}


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover height x width, then centre-crop (both formats store the training size)."""
    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    out = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    top, left = (out.shape[1] - height) // 2, (out.shape[2] - width) // 2
    return np.ascontiguousarray(out[:, top : top + height, left : left + width])


def write_datasets(root: Path, videos: int, height: int, width: int) -> int:
    """The same videos as shards (GOP 16 and 250, one video per shard), latent shards and PNG folders."""
    for folder in (*SHARD_ROWS.values(), "latent_shards", "png"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    source = _fit(decode_mp4(str(DANCE)), height, width) if DANCE.is_file() else None
    for v in range(videos):
        length = len(source) if source is not None else 96
        synthetic, pose = make_synthetic_video(v, length, height, width, seed=v)
        frames = synthetic if source is None else (source if v % 2 == 0 else source[:, :, ::-1].copy())
        for folder, old in (("shards", False), ("shards_gop250", True)):
            with wds.TarWriter(str(root / folder / f"shard-{v:06d}.tar")) as writer:
                sample_args = (f"video{v:03d}", frames, 16.0, pose, {"source": "bench"})
                writer.write(encode_sample(*sample_args, gop=None if old else 16, fast_decode=not old))
        # Latent-cache samples: SD-VAE latents (f, 4, H/8, W/8) and CLIP image embeddings (f, 1024).
        rng = np.random.default_rng(v)
        latent = rng.standard_normal((length, 4, height // 8, width // 8)).astype(np.float16)
        meta = json.dumps({"height": height, "width": width, "frames": length}).encode()
        with wds.TarWriter(str(root / "latent_shards" / f"shard-{v:06d}.tar")) as writer:
            writer.write(
                {
                    "__key__": f"video{v:03d}",
                    "latents.npy": latent,
                    "clip.npy": np.zeros((length, 1024), np.float16),
                    "json": meta,
                    "pose.npz": pose.to_npz_bytes(),
                }
            )
        folder = root / "png" / f"video{v:03d}"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "poses").mkdir(exist_ok=True)
        rendered = render_pose_sequence(pose, height, width)
        for i in range(length):
            cv2.imwrite(str(folder / "images" / f"{i:04d}.png"), frames[i][..., ::-1])
            cv2.imwrite(str(folder / "poses" / f"{i:04d}.png"), rendered[i][..., ::-1])
    return length


class PngClips(Dataset):
    """Peers' layout: ``<video>/images/*.png`` and pre-rendered ``<video>/poses/*.png``, read with PIL.

    Returns what ``ClipExample`` returns: uint8 (f, H, W, 3) video and pose, (H, W, 3) references.
    ``timer`` (in-process breakdown only) adds CPU seconds per stage."""

    def __init__(self, root: Path, num_frames: int, clips: int, timer: Counter | None = None) -> None:
        self.videos = sorted(p for p in root.iterdir() if p.is_dir())
        self.num_frames, self.clips, self.timer = num_frames, clips, timer

    def __len__(self) -> int:
        return self.clips

    def _read(self, paths: list[Path], stage: str) -> torch.Tensor:
        start = time.process_time()
        frames = []
        for path in paths:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        if self.timer is not None:
            self.timer[stage] += time.process_time() - start
        return np.stack(frames)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(index)
        video = self.videos[index % len(self.videos)]
        images, poses = sorted((video / "images").iterdir()), sorted((video / "poses").iterdir())
        start = int(rng.integers(len(images) - self.num_frames + 1))
        clip = [*range(start, start + self.num_frames), int(rng.integers(len(images)))]
        pixels = self._read([images[i] for i in clip], "read image PNGs")
        pose = self._read([poses[i] for i in clip], "read pose PNGs")
        return {
            "video": torch.from_numpy(pixels[:-1]),
            "ref_image": torch.from_numpy(pixels[-1]),
            "pose": torch.from_numpy(pose[:-1]),
            "ref_pose": torch.from_numpy(pose[-1]),
        }


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of this process and ``pids`` (Linux ``/proc/<pid>/stat``)."""
    own = os.times()
    total = own.user + own.system
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def measure(loader, clips: int, warmup: int) -> tuple[float, float]:
    """(clips per second, CPU ms per clip of all processes) after ``warmup`` batches."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    pids = [w.pid for w in getattr(iterator, "_workers", [])]  # the DataLoader's worker processes
    cpu, start, seen = _cpu_seconds(pids), time.perf_counter(), 0
    while seen < clips:
        seen += len(next(iterator)["pose"])
    wall = time.perf_counter() - start
    return seen / wall, 1000 * (_cpu_seconds(pids) - cpu) / seen


def shard_stages(folder: Path, example: clips.ClipExample, n: int) -> dict[str, float]:
    """In-process CPU ms per clip by stage of ``ClipExample`` on the first sample of ``folder``."""
    sample = next(iter(wds.WebDataset(str(next(folder.glob("*.tar"))), shardshuffle=False)))
    timer, saved = Counter(), {n: getattr(clips, n) for n in ("decode_mp4_yuv420", "apply_box_yuv420")}
    saved["render_pose_index_sequence"] = clips.render_pose_index_sequence
    names = {
        "decode_mp4_yuv420": "decode mp4 (seek, 1 thread)",
        "apply_box_yuv420": "resize / crop / pack",
        "render_pose_index_sequence": "render skeletons",
    }

    def timed(name, fn):
        def run(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                timer[names[name]] += time.process_time() - start

        return run

    for name, fn in saved.items():
        if name == "decode_mp4_yuv420":
            fn = lambda data, indices, threads=0, _f=fn: _f(data, indices, threads=1)  # noqa: E731 - as in a worker
        setattr(clips, name, timed(name, fn))
    try:
        rng, start = np.random.default_rng(0), time.process_time()
        for _ in range(n):
            example(sample, rng)
        total = time.process_time() - start
    finally:
        for name, fn in saved.items():
            setattr(clips, name, fn)
    return _per_clip(timer, total, n)


def png_stages(folder: Path, num_frames: int, n: int) -> dict[str, float]:
    timer = Counter()
    dataset, start = PngClips(folder, num_frames, n, timer), time.process_time()
    for i in range(n):
        dataset[i]
    return _per_clip(timer, time.process_time() - start, n)


def _per_clip(timer: Counter, total: float, n: int) -> dict[str, float]:
    out = {name: 1000 * seconds / n for name, seconds in timer.items()}
    return {**out, "other": 1000 * total / n - sum(out.values()), "total": 1000 * total / n}


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=32, help="clips timed per format")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2, help="runs per row; the best is reported")
    parser.add_argument("--root", help="keep the generated data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        start = time.perf_counter()
        length = write_datasets(root, args.videos, args.height, args.width)
        print(
            f"wrote {args.videos} videos of {length} frames in {time.perf_counter() - start:.0f} s under {root}"
        )
        warmup, results = 2 * max(args.workers, 1), {}
        for _ in range(args.repeats):  # rows alternate, so a burst of other load hits every row alike
            for name, folder in (
                *SHARD_ROWS.items(),
                ("shards, latent cache", "latent_shards"),
                ("png", "png"),
            ):
                if folder == "png":
                    name, png = (
                        "PNG folders (PIL)",
                        PngClips(root / "png", args.num_frames, args.clips + warmup),
                    )
                    loader = DataLoader(
                        png, batch_size=1, num_workers=args.workers, persistent_workers=args.workers > 0
                    )
                else:
                    loader = VideoPoseDataModule(
                        train_shards=str(root / folder),
                        num_frames=args.num_frames,
                        height=args.height,
                        width=args.width,
                        batch_size=1,
                        num_workers=args.workers,
                        resampled=True,
                        use_latent_cache=folder == "latent_shards",
                    ).train_dataloader()
                rate, cpu = measure(loader, args.clips, warmup)
                best = results.get(name, (0.0, float("inf")))
                results[name] = (max(rate, best[0]), min(cpu, best[1]))
                del loader
                gc.collect()  # stop its workers here, not in the next row's forked workers
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        example = VideoPoseDataModule(
            str(root / "shards"), num_frames=args.num_frames, height=args.height, width=args.width
        ).train_example
        stages = {
            **{name: shard_stages(root / folder, example, 8) for name, folder in SHARD_ROWS.items()},
            "PNG folders (PIL)": png_stages(root / "png", args.num_frames, 8),
        }
    base = results["PNG folders (PIL)"][0]
    print(
        f"\n{args.num_frames}-frame clips at {args.height}x{args.width}, {args.workers} workers, {args.clips} clips"
    )
    print(
        f"| {'format':26} | clips/s | vs PNG | CPU ms/clip |\n| {'-' * 26} | ------- | ------ | ----------- |"
    )
    for name, (rate, cpu) in results.items():
        print(f"| {name:26} | {rate:7.2f} | {rate / base:5.2f}x | {cpu:11.0f} |")
    print("\nIn-process CPU ms per clip by stage (1 thread):")
    for name, times in stages.items():
        print(f"  {name}: " + ", ".join(f"{stage} {ms:.0f}" for stage, ms in times.items()))
    return results


if __name__ == "__main__":
    main()
