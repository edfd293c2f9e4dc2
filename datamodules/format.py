"""The shard sample format of SPEC §5: one sample is one video.

A sample in a WebDataset tar has three members sharing a key:
- ``<key>.mp4``: the video, H.264, any size and fps;
- ``<key>.pose.npz``: per-frame keypoints, normalised [0, 1] image coordinates with scores
  (``body`` f x 20 x 3: the 18 OpenPose points then left and right toe; ``hands`` f x 2 x 21 x 3:
  index 0 the left hand, 1 the right; optional ``face`` f x 68 x 3). Missing points have score 0;
- ``<key>.json``: metadata (fps, width, height, frames, source, licence).
"""

from __future__ import annotations

import bisect
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import numpy as np

from unianimate.video_io import DEFAULT_GOP, encode_h264, encode_mp4  # noqa: F401 (the shard writer's encoder)

BODY_POINTS = 20  # 18 OpenPose body points + left toe + right toe
HAND_POINTS = 21
FACE_POINTS = 68


@dataclass
class PoseSequence:
    """Keypoints of one video; every array is (frames, points, 3) = x, y, score."""

    body: np.ndarray  # f 20 3
    hands: np.ndarray  # f 2 21 3
    face: np.ndarray | None = None  # f 68 3

    def __post_init__(self) -> None:
        f = self.body.shape[0]
        if self.body.shape[1:] != (BODY_POINTS, 3):
            raise ValueError(f"body must be (frames, {BODY_POINTS}, 3), got {self.body.shape}")
        if self.hands.shape != (f, 2, HAND_POINTS, 3):
            raise ValueError(f"hands must be ({f}, 2, {HAND_POINTS}, 3), got {self.hands.shape}")
        if self.face is not None and self.face.shape != (f, FACE_POINTS, 3):
            raise ValueError(f"face must be ({f}, {FACE_POINTS}, 3), got {self.face.shape}")

    def __len__(self) -> int:
        return self.body.shape[0]

    def frames(self, index: np.ndarray | list[int] | slice) -> PoseSequence:
        face = None if self.face is None else self.face[index]
        return PoseSequence(self.body[index], self.hands[index], face)

    def to_npz_bytes(self) -> bytes:
        arrays = {"body": self.body.astype(np.float32), "hands": self.hands.astype(np.float32)}
        if self.face is not None:
            arrays["face"] = self.face.astype(np.float32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> PoseSequence:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["body"], z["hands"], z["face"] if "face" in z.files else None)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> PoseSequence:
        d = json.loads(data)
        face = d.get("face")
        return cls(
            np.asarray(d["body"], np.float32),
            np.asarray(d["hands"], np.float32),
            None if face is None else np.asarray(face, np.float32),
        )


@contextmanager
def _video_stream(
    data: bytes | str, threads: int
) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    """The opened container and its first video stream, decoding with ``threads`` (see :func:`decode_mp4`)."""
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = ("AUTO", 0) if threads == 0 else ("SLICE", threads)
        yield container, stream


def decode_mp4(data: bytes | str, indices: list[int] | None = None, threads: int = 0) -> np.ndarray:
    """Decode an mp4 (bytes or a path) to uint8 RGB frames (f, H, W, 3); ``indices`` picks frames.

    With ``indices`` only the needed stretches are decoded: each starts at the keyframe before its
    first wanted frame (found in the container's packets, no decoding) unless decoding on from the
    current position is no longer. Frame i is the one with the i-th smallest timestamp, i.e. the
    i-th frame of a full decode; :func:`decode_mp4_reference` is that full decode.
    ``threads``: 0 lets FFmpeg pick (frame threads, one per core); 1 decodes in the calling thread,
    cheaper in CPU time per clip when DataLoader workers already use every core.
    """
    if indices is None:
        return decode_mp4_reference(data, None, threads)
    frames = _decode_frames(data, indices, threads, lambda frame: frame.to_ndarray(format="rgb24"))
    return np.stack([frames[i] for i in indices])


@dataclass(frozen=True)
class YUV420Frames:
    """Frames as the decoder holds them: full-size luma, chroma at half size each way.

    ``y`` uint8 (f, H, W); ``uv`` uint8 (f, 2, ceil(H / 2), ceil(W / 2)), Cb then Cr; ``colour``:
    the code :func:`datamodules.colour.yuv420_to_rgb` converts with (matrix and range).
    """

    y: np.ndarray
    uv: np.ndarray
    colour: int


def decode_mp4_yuv420(data: bytes | str, indices: list[int] | None = None, threads: int = 0) -> YUV420Frames:
    """:func:`decode_mp4` without the RGB conversion: the frames' YUV 4:2:0 planes as decoded
    (every frame when ``indices`` is None).

    Half the bytes of RGB, and the conversion (about a third of the decoding CPU at 768 x 512) can
    run on the device, :func:`datamodules.colour.yuv420_to_rgb`. Frames in another pixel format
    (4:2:2, 4:4:4, RGB) are converted to 4:2:0 by FFmpeg first.
    """
    colours = set()

    def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray]:
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            frame = frame.reformat(format="yuv420p")  # keeps the colour space and range
        colours.add(colour_code(frame))
        y, u, v = (_plane_array(plane) for plane in frame.planes[:3])
        return y, np.stack([u, v])

    frames = _decode_frames(data, indices, threads, planes)
    indices = sorted(frames) if indices is None else indices
    if len(colours) != 1:
        raise ValueError(f"frames of one video in different colour spaces: codes {sorted(colours)}")
    return YUV420Frames(
        np.stack([frames[i][0] for i in indices]), np.stack([frames[i][1] for i in indices]), colours.pop()
    )


def colour_code(frame: av.VideoFrame) -> int:
    """0 BT.601 limited range, 1 BT.709 limited, 2 BT.601 full, 3 BT.709 full; unspecified counts as
    BT.601 limited, as FFmpeg's own conversion takes it."""
    bt709 = frame.colorspace == 1  # AVCOL_SPC_BT709
    full = frame.color_range == 2 or frame.format.name.startswith("yuvj")  # AVCOL_RANGE_JPEG
    return int(bt709) + 2 * int(full)


def _plane_array(plane) -> np.ndarray:
    """One 8-bit plane as an (height, width) array, a view without the line padding."""
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _decode_frames(data: bytes | str, indices: list[int] | None, threads: int, convert) -> dict:
    """Frame index -> ``convert(frame)`` for the wanted frames, all when None (see :func:`decode_mp4`)."""
    with _video_stream(data, threads) as (container, stream):
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]  # decode order
        index = {pts: i for i, pts in enumerate(sorted(p.pts for p in packets))}
        # Frame i decodes from the last keyframe shown at or before it: (shown index, packet index).
        keyframes = sorted((index[p.pts], k) for k, p in enumerate(packets) if p.is_keyframe)
        indices = range(len(packets)) if indices is None else indices
        bad = [i for i in indices if not 0 <= i < len(packets)]
        if bad or not keyframes or keyframes[0][0] != 0:
            raise ValueError(f"video has {len(packets)} frames, wanted {bad[:5]} (keyframes {keyframes[:2]})")
        shown, wanted = [i for i, _ in keyframes], set(indices)
        codec, frames, position = stream.codec_context, {}, None  # position: next packet to decode
        for target in sorted(set(indices)):
            if target in frames:
                continue
            start = keyframes[bisect.bisect_right(shown, target) - 1][1]
            if position is None or start > position:
                codec.flush_buffers()
                position = start
            while target not in frames:
                if position > len(packets):
                    raise ValueError(f"decoding ended before frame {target}")
                packet = packets[position] if position < len(packets) else None
                if packet is not None:  # frames nobody wants and nothing refers to need no decoding
                    codec.skip_frame = "DEFAULT" if index[packet.pts] in wanted else "NONREF"
                decoded = codec.decode(packet)
                position += 1
                for frame in decoded:
                    i = index.get(frame.pts, -1)
                    if i in wanted and i not in frames:
                        frames[i] = convert(frame)
    return frames


def decode_mp4_reference(data: bytes | str, indices: list[int] | None = None, threads: int = 0) -> np.ndarray:
    """:func:`decode_mp4` by decoding every frame from the first up to the last wanted one."""
    wanted = None if indices is None else set(indices)
    frames = {}
    with _video_stream(data, threads) as (container, stream):
        last = None if wanted is None else max(wanted)
        for i, frame in enumerate(container.decode(stream)):
            if wanted is None or i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if last is not None and i >= last:
                break
    if indices is None:
        return np.stack([frames[i] for i in sorted(frames)])
    missing = [i for i in indices if i not in frames]
    if missing:
        raise ValueError(f"video has no frames {missing[:5]} (decoded {len(frames)})")
    return np.stack([frames[i] for i in indices])


def encode_sample(
    key: str,
    frames: np.ndarray,
    fps: float,
    pose: PoseSequence,
    meta: dict,
    gop: int | None = DEFAULT_GOP,
    fast_decode: bool = True,
    crf: int = 18,
) -> dict:
    """One WebDataset sample dict (for ``webdataset.ShardWriter.write``); ``gop``, ``fast_decode``,
    ``crf`` as for :func:`encode_mp4` (``crf=0``: lossless)."""
    if len(pose) != len(frames):
        raise ValueError(f"{key}: {len(frames)} frames but {len(pose)} pose frames")
    info = {"fps": fps, "height": frames.shape[1], "width": frames.shape[2], "frames": len(frames)}
    info.update(meta)
    return {
        "__key__": key,
        "mp4": encode_mp4(frames, fps, crf=crf, gop=gop, fast_decode=fast_decode),
        "pose.npz": pose.to_npz_bytes(),
        "json": json.dumps(info).encode(),
    }
