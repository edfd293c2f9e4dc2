"""Build WebDataset shards (``datamodules/format.py``) from a folder of videos, resumably.

Inputs: ``*.mp4`` files (UBC Fashion: one per video) and frame folders (TikTok:
``<video>/images/*.png``, or the frames directly in ``<video>/``), found recursively.

Workers (a process pool) decode, extract keypoints and encode each video; the parent alone writes
the shards, so the output is the same for any worker count. A shard is closed before a sample would
push it past ``max_shard_bytes`` (a single sample larger than the cap gets a shard of its own).

Resuming: ``progress.jsonl`` in the output folder logs, flushed and fsynced line by line, the run's
settings, each skipped video with its reason, each sample written (video, shard, frames) and each
closed shard (samples, frames, bytes, sha256). A rerun keeps the closed shards and their videos,
keeps skipped videos skipped, deletes shard files that were never closed and redoes their videos,
and numbers new shards after the last closed one, and says so in one line. A crash therefore
loses at most the open shard. A rerun with other settings (``pose_dir`` included: a wrong one
skips every video) is refused with the settings that differ.
``manifest.json`` is rewritten from that log whenever a shard closes and at the end.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import webdataset as wds
from tqdm import tqdm

from datamodules.format import decode_mp4, encode_sample
from datamodules.pose_extract import PoseBackend, make_extractor
from unianimate.errors import InputError, MissingInputError

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
TAR_RECORD = 10240  # tarfile pads a closed archive to a multiple of this


@dataclass(frozen=True)
class VideoJob:
    name: str  # relative path without suffix, e.g. "dancer01" or "tiktok/00001"
    path: str  # an mp4 file or a frame folder
    pose_path: str | None = None  # the precomputed keypoint file


@dataclass(frozen=True)
class BuildSettings:
    pose_backend: PoseBackend
    min_frames: int = 16
    max_side: int | None = None
    frame_folder_fps: float = 30.0  # TikTok is 30 fps; frame folders carry no rate
    source: str = ""
    licence: str = ""


def find_videos(input_dir: Path, pose_dir: Path | None = None) -> list[VideoJob]:
    """mp4 files and frame folders under ``input_dir``, sorted by name."""
    jobs = []
    for path in sorted(input_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() == ".mp4":
            name = path.relative_to(input_dir).with_suffix("").as_posix()
        elif path.is_dir() and _frame_files(path):
            name = path.relative_to(input_dir).as_posix()
            if path.name == "images":  # TikTok: <video>/images/*.png is named after <video>
                name = path.parent.relative_to(input_dir).as_posix()
        else:
            continue
        pose_path = None
        if pose_dir is not None:
            stem = name.replace("/", "_")
            candidates = [
                pose_dir / f"{stem}{suffix}" for suffix in (".pose.npz", ".npz", ".pose.json", ".json")
            ]
            pose_path = next((str(c) for c in candidates if c.is_file()), str(candidates[0]))
        jobs.append(VideoJob(name, str(path), pose_path))
    return jobs


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _read_video(job: VideoJob, settings: BuildSettings) -> tuple[np.ndarray, float]:
    path = Path(job.path)
    if path.is_dir():
        frames = []
        for file in _frame_files(path):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"unreadable frame {file.name}")
            frames.append(image[..., ::-1])
        if len({f.shape for f in frames}) > 1:
            raise ValueError("frames of different sizes")
        return np.stack(frames), settings.frame_folder_fps
    import av

    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return decode_mp4(str(path)), float(rate) if rate else 30.0


def _resize(frames: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so the longer side is at most ``max_side`` (aspect kept), to even sizes for H.264.

    Keypoints are normalised, so a resize (not a crop) leaves them valid.
    """
    height, width = frames.shape[1:3]
    factor = min(1.0, max_side / max(height, width)) if max_side else 1.0
    new_h, new_w = max(2, round(height * factor / 2) * 2), max(2, round(width * factor / 2) * 2)
    if (new_h, new_w) == (height, width):
        return frames
    return np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA) for f in frames])


_EXTRACTOR = None


def _init_worker(settings: BuildSettings, backend_kwargs: dict[str, Any]) -> None:
    global _EXTRACTOR
    if settings.pose_backend != "precomputed":  # model-based extractors load once per worker
        _EXTRACTOR = make_extractor(settings.pose_backend, **backend_kwargs)


def process_video(job: VideoJob, settings: BuildSettings) -> tuple[VideoJob, dict | None, str | None]:
    """Decode, check, extract keypoints, resize and encode one video -> (job, sample, skip reason)."""
    try:
        frames, fps = _read_video(job, settings)
        if len(frames) < settings.min_frames:
            return job, None, f"too short: {len(frames)} frames < {settings.min_frames}"
        if settings.pose_backend == "precomputed":
            extractor = make_extractor("precomputed", path=job.pose_path)
        else:
            extractor = _EXTRACTOR
        pose = extractor(frames)
        frames = _resize(frames, settings.max_side)
        key = job.name.replace("/", "_").replace(".", "_")  # webdataset splits keys at dots
        meta = {"source": settings.source or job.name, "licence": settings.licence, "video": job.name}
        return job, encode_sample(key, frames, fps, pose, meta), None
    except Exception as error:  # noqa: BLE001 - one bad video must never stop the run
        return job, None, f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _process(job: VideoJob) -> tuple[VideoJob, dict | None, str | None]:
    return process_video(job, _SETTINGS)


_SETTINGS: BuildSettings | None = None


def _init_pool(settings: BuildSettings, backend_kwargs: dict[str, Any]) -> None:
    global _SETTINGS
    _SETTINGS = settings
    _init_worker(settings, backend_kwargs)


def _sample_bytes(sample: dict) -> int:
    """Tar size of a sample: a 512-byte header per member plus its data padded to 512."""
    return sum(512 + -(-len(v) // 512) * 512 for k, v in sample.items() if not k.startswith("__"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_settings(settings: BuildSettings, pose_dir: str | Path | None) -> dict:
    return {**asdict(settings), "pose_dir": None if pose_dir is None else str(Path(pose_dir).resolve())}


class ProgressLog:
    """The append-only ``progress.jsonl`` and the state it implies (see the module docstring)."""

    def __init__(self, out_dir: Path, settings: BuildSettings, pose_dir: str | Path | None = None) -> None:
        self.path = out_dir / "progress.jsonl"
        self.shards: list[dict] = []  # closed shards
        self.videos: dict[str, dict] = {}  # done videos: name -> {"shard", "frames"}
        self.skipped: dict[str, str] = {}
        pending: dict[str, list[tuple[str, int]]] = {}
        events = (
            [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            if self.path.exists()
            else []
        )
        now = _recorded_settings(settings, pose_dir)
        for event in events:
            kind = event["event"]
            if kind == "settings":
                before = {"pose_dir": now["pose_dir"], **event["settings"]}  # logs before pose_dir was kept
                differ = [f"{k}={before.get(k)!r} (now {now[k]!r})" for k in now if before.get(k) != now[k]]
                if differ:
                    raise InputError(
                        f"out_dir: '{out_dir}' was built with {', '.join(differ)}: its shards and skipped "
                        "videos depend on them; rerun with the same settings, or use a new folder"
                    )
            elif kind == "skip":
                self.skipped[event["video"]] = event["reason"]
            elif kind == "sample":
                pending.setdefault(event["shard"], []).append((event["video"], event["frames"]))
            elif kind == "shard":
                self.shards.append({k: v for k, v in event.items() if k != "event"})
                for video, frames in pending.pop(event["name"], []):
                    self.videos[video] = {"shard": event["name"], "frames": frames}
        self.lost_shards = sorted(pending)  # written but never closed: their videos are redone
        self._file = open(self.path, "a")
        if not events:
            self.append({"event": "settings", "settings": now})

    def append(self, event: dict) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def manifest(self) -> dict:
        return {
            "shards": self.shards,
            "samples": sum(s["samples"] for s in self.shards),
            "frames": sum(s["frames"] for s in self.shards),
            "videos": self.videos,
            "skipped": self.skipped,
        }


def _write_manifest(out_dir: Path, log: ProgressLog) -> dict:
    manifest = log.manifest()
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out_dir / "manifest.json")
    return manifest


def build_shards(
    input_dir: str | Path,
    out_dir: str | Path,
    settings: BuildSettings,
    backend_kwargs: dict[str, Any] | None = None,
    pose_dir: str | Path | None = None,
    max_shard_bytes: int = 1 << 30,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write ``out_dir/shard-%06d.tar`` + ``manifest.json``; returns the manifest."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    if not input_dir.is_dir():
        raise MissingInputError(
            f"input_dir: no folder at '{input_dir}' (expected a folder of mp4s / frame folders)"
        )
    if pose_dir is not None and not Path(pose_dir).is_dir():
        raise MissingInputError(
            f"pose_dir: no folder at '{pose_dir}' (expected the precomputed keypoint files)"
        )
    if settings.pose_backend != "precomputed":
        # Fail here, loudly, on a missing dependency or weight file: a failing pool initializer
        # would only restart its workers forever.
        make_extractor(settings.pose_backend, **(backend_kwargs or {}))
    elif pose_dir is None:
        raise ValueError("the precomputed pose backend needs pose_dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = ProgressLog(out_dir, settings, pose_dir)
    for shard in log.lost_shards:
        (out_dir / shard).unlink(missing_ok=True)
    jobs = find_videos(input_dir, Path(pose_dir) if pose_dir else None)
    todo = [j for j in jobs if j.name not in log.videos and j.name not in log.skipped]
    if log.shards or log.skipped or log.lost_shards:
        print(_resume_summary(out_dir, log, jobs, todo), file=sys.stderr)
    start_shard = 1 + max((int(s["name"][6:12]) for s in log.shards), default=-1)
    open_shard: dict[str, Any] = {"samples": 0, "frames": 0, "bytes": 0}

    def on_close(fname: str) -> None:
        path = Path(fname)
        if open_shard["samples"] == 0:  # ShardWriter opens a file before the first sample
            path.unlink(missing_ok=True)
            return
        record = {"name": path.name, "samples": open_shard["samples"], "frames": open_shard["frames"]}
        record.update(bytes=path.stat().st_size, sha256=_sha256(path))
        log.append({"event": "shard", **record})
        log.shards.append(record)
        log.videos.update(open_shard.pop("videos", {}))
        open_shard.update(samples=0, frames=0, bytes=0)
        _write_manifest(out_dir, log)

    writer = wds.ShardWriter(
        str(out_dir / "shard-%06d.tar"),
        maxsize=max_shard_bytes,
        post=on_close,
        start_shard=start_shard,
        verbose=0,
    )
    try:
        for job, sample, reason in tqdm(
            _run(todo, settings, backend_kwargs or {}, workers),
            total=len(todo),
            desc="videos",
            disable=not progress,
        ):
            if sample is None:
                log.skipped[job.name] = reason
                log.append({"event": "skip", "video": job.name, "reason": reason})
                continue
            size = _sample_bytes(sample)
            if open_shard["samples"] and open_shard["bytes"] + size + TAR_RECORD > max_shard_bytes:
                writer.next_stream()
            writer.write(sample)
            frames = json.loads(sample["json"])["frames"]
            shard = Path(writer.fname).name
            open_shard["samples"] += 1
            open_shard["frames"] += frames
            open_shard["bytes"] += size
            open_shard.setdefault("videos", {})[job.name] = {"shard": shard, "frames": frames}
            log.append({"event": "sample", "video": job.name, "shard": shard, "frames": frames})
    finally:
        writer.close()
        log.close()
    return _write_manifest(out_dir, log)


def _resume_summary(out_dir: Path, log: ProgressLog, jobs: list[VideoJob], todo: list[VideoJob]) -> str:
    """What a rerun reuses and what it redoes, in one line."""
    names = {j.name for j in jobs}
    reasons: dict[str, int] = {}
    for video, reason in log.skipped.items():
        if video in names:
            key = reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    skipped = sum(reasons.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    return (
        f"resuming {out_dir}: reusing {len(log.shards)} closed shard(s) with {len(log.videos)} video(s); "
        f"{skipped} video(s) skipped before stay skipped"
        + (f" ({detail})" if detail else "")
        + f"; {len(log.lost_shards)} unclosed shard(s) deleted; {len(todo)} video(s) to do"
    )


def _run(
    jobs: list[VideoJob], settings: BuildSettings, backend_kwargs: dict[str, Any], workers: int
) -> Iterator[tuple[VideoJob, dict | None, str | None]]:
    if workers <= 1:
        _init_pool(settings, backend_kwargs)
        yield from map(_process, jobs)
        return
    # spawn: onnxruntime, MediaPipe and PyAV hold threads that a fork would copy half-initialised.
    with multiprocessing.get_context("spawn").Pool(workers, _init_pool, (settings, backend_kwargs)) as pool:
        yield from pool.imap(_process, jobs)  # in order, so the shards don't depend on timing
