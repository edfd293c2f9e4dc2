"""Data-loading throughput: our shards vs per-frame PNG folders (the format peers use), side by side.

Both hold the same videos at the training size (H x W = 768 x 512, the release's): the shards as
mp4 + keypoints rendered on the fly by ``VideoPoseDataModule``; the PNG folders as one PNG per frame
plus pre-rendered pose PNGs, read with PIL. Each side loads random 16-frame clips with a random
reference frame (video, pose, ref image, ref pose as float tensors) through a DataLoader with the
same worker count. The content is the real example dance video (``shared/data``) with synthetic
skeletons (their drawing cost is what matters); without it, synthetic videos.

    python tools/bench_data.py --workers 2 --clips 32

A third row measures a proposal, not the shipped reader: ``decode_mp4`` decodes from frame 0 up
to the last wanted frame (clip end or reference frame, often near the end), and libx264's default
keyframe interval is 250. Encoding with a keyframe every 16 frames and seeking to the keyframe
before each run of wanted frames decodes about 16-48 frames per clip instead of about 100.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import webdataset as wds
from einops import rearrange
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import datamodules.clips
from datamodules.format import decode_mp4, encode_sample
from datamodules.pose_render import render_pose_sequence
from datamodules.synthetic import make_synthetic_video
from datamodules.video_datamodule import VideoPoseDataModule

DANCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "dance_source.mp4"


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover height x width, then centre-crop (both formats store the training size)."""
    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    out = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    top, left = (out.shape[1] - height) // 2, (out.shape[2] - width) // 2
    return np.ascontiguousarray(out[:, top : top + height, left : left + width])


def encode_mp4_gop(frames: np.ndarray, fps: float, gop: int) -> bytes:
    """``datamodules.format.encode_mp4`` with a keyframe every ``gop`` frames (the proposal)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "g": str(gop), "keyint_min": str(gop)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_mp4_seek(data: bytes, indices: list[int], gop: int = 16) -> np.ndarray:
    """``decode_mp4`` that seeks to the keyframe before each run of wanted frames (the proposal)."""
    wanted, frames = sorted(set(indices)), {}
    runs = [[wanted[0]]]
    for i in wanted[1:]:
        if i - runs[-1][-1] <= gop:
            runs[-1].append(i)
        else:
            runs.append([i])
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate, base, start = stream.average_rate, stream.time_base, stream.start_time or 0
        for run in runs:
            container.seek(start + int(run[0] / rate / base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                i = int(round((frame.pts - start) * base * rate))
                if i in run:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= run[-1]:
                    break
    return np.stack([frames[i] for i in indices])


def write_datasets(root: Path, videos: int, height: int, width: int) -> tuple[Path, Path, int]:
    """The same videos as shards (one per shard), latent-cache shards, and PNG folders."""
    shards, pngs, latents = root / "shards", root / "png", root / "latent_shards"
    for folder in (shards, pngs, latents, root / "gop_shards"):
        folder.mkdir(parents=True, exist_ok=True)
    source = _fit(decode_mp4(str(DANCE)), height, width) if DANCE.is_file() else None
    for v in range(videos):
        length = len(source) if source is not None else 96
        synthetic, pose = make_synthetic_video(v, length, height, width, seed=v)
        frames = synthetic if source is None else (source if v % 2 == 0 else source[:, :, ::-1].copy())
        with wds.TarWriter(str(shards / f"shard-{v:06d}.tar")) as writer:
            sample = encode_sample(f"video{v:03d}", frames, 16.0, pose, {"source": "bench"})
            writer.write(sample)
        with wds.TarWriter(str(root / "gop_shards" / f"shard-{v:06d}.tar")) as writer:
            writer.write({**sample, "mp4": encode_mp4_gop(frames, 16.0, gop=16)})
        # Latent-cache samples: SD-VAE latents (f, 4, H/8, W/8) and CLIP image embeddings (f, 1024).
        latent = (
            np.random.default_rng(v).standard_normal((length, 4, height // 8, width // 8)).astype(np.float16)
        )
        embeds = np.zeros((length, 1024), np.float16)
        meta = json.dumps({"height": height, "width": width, "frames": length}).encode()
        with wds.TarWriter(str(latents / f"shard-{v:06d}.tar")) as writer:
            sample = {"__key__": f"video{v:03d}", "latents.npy": latent, "clip.npy": embeds, "json": meta}
            writer.write({**sample, "pose.npz": pose.to_npz_bytes()})
        folder = pngs / f"video{v:03d}"
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "poses").mkdir(exist_ok=True)
        rendered = render_pose_sequence(pose, height, width)
        for i in range(length):
            cv2.imwrite(str(folder / "images" / f"{i:04d}.png"), frames[i][..., ::-1])
            cv2.imwrite(str(folder / "poses" / f"{i:04d}.png"), rendered[i][..., ::-1])
    return shards, pngs, length


class PngClips(Dataset):
    """Peers' layout: ``<video>/images/*.png`` and pre-rendered ``<video>/poses/*.png``, read with PIL."""

    def __init__(self, root: Path, num_frames: int, clips: int) -> None:
        self.videos = sorted(p for p in root.iterdir() if p.is_dir())
        self.num_frames, self.clips = num_frames, clips

    def __len__(self) -> int:
        return self.clips

    @staticmethod
    def _read(path: Path) -> torch.Tensor:
        with Image.open(path) as image:
            return torch.from_numpy(np.array(image.convert("RGB")))

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(index)
        video = self.videos[index % len(self.videos)]
        images, poses = sorted((video / "images").iterdir()), sorted((video / "poses").iterdir())
        start = int(rng.integers(len(images) - self.num_frames + 1))
        ref = int(rng.integers(len(images)))
        clip = [*range(start, start + self.num_frames), ref]
        pixels = torch.stack([self._read(images[i]) for i in clip]).float().div_(127.5).sub_(1.0)
        pose = torch.stack([self._read(poses[i]) for i in clip]).float().div_(255.0)
        pixels, pose = rearrange(pixels, "f h w c -> c f h w"), rearrange(pose, "f h w c -> c f h w")
        return {
            "video": pixels[:, :-1],
            "ref_image": pixels[:, -1],
            "pose": pose[:, :-1],
            "ref_pose": pose[:, -1],
        }


def clips_per_second(loader, clips: int, warmup: int) -> float:
    """Clips per second after ``warmup`` batches (worker start-up excluded)."""
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    seen = 0
    while seen < clips:
        seen += len(next(iterator)["pose"])
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=32, help="clips timed per format")
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--root", help="keep the generated data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        start = time.perf_counter()
        shards, pngs, length = write_datasets(root, args.videos, args.height, args.width)
        print(
            f"wrote {args.videos} videos of {length} frames in {time.perf_counter() - start:.0f} s under {root}"
        )
        warmup, results = 2 * max(args.workers, 1), {}
        rows = (
            ("shards (mp4 + keypoints)", "shards", False),
            ("shards, GOP 16 + seek *", "gop_shards", False),
            ("shards, latent cache", "latent_shards", True),
        )
        for name, folder, latent in rows:
            # The proposal row swaps the reader's decoder; DataLoader workers fork and inherit it.
            datamodules.clips.decode_mp4 = decode_mp4_seek if folder == "gop_shards" else decode_mp4
            module = VideoPoseDataModule(
                train_shards=str(root / folder),
                num_frames=args.num_frames,
                height=args.height,
                width=args.width,
                batch_size=1,
                num_workers=args.workers,
                resampled=True,
                use_latent_cache=latent,
            )
            results[name] = clips_per_second(module.train_dataloader(), args.clips, warmup)
        datamodules.clips.decode_mp4 = decode_mp4
        png = PngClips(pngs, args.num_frames, args.clips + warmup)
        loader = DataLoader(png, batch_size=1, num_workers=args.workers, persistent_workers=args.workers > 0)
        results["PNG folders (PIL)"] = clips_per_second(loader, args.clips, warmup)
    base = results["PNG folders (PIL)"]
    print(
        f"\n{args.num_frames}-frame clips at {args.height}x{args.width}, {args.workers} workers, {args.clips} clips"
    )
    print(f"| {'format':26} | clips/s | vs PNG |\n| {'-' * 26} | ------- | ------ |")
    for name, rate in results.items():
        print(f"| {name:26} | {rate:7.2f} | {rate / base:5.2f}x |")
    print("* proposal: keyframe every 16 frames + seeking decode (this script), not yet the shipped reader")
    return results


if __name__ == "__main__":
    main()
