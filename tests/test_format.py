"""The mp4 codec of the shard format: short-GOP encoding and the seeking ``decode_mp4``."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from datamodules.format import decode_mp4, decode_mp4_reference, encode_h264, encode_mp4


def moving_frames(n: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Noise texture sliding by 3 pixels a frame plus a per-frame grey ramp: every frame differs."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height, width + 3 * n, 3), dtype=np.uint8)
    frames = np.stack([texture[:, 3 * i : 3 * i + width] for i in range(n)])
    return (frames // 2 + (np.arange(n, dtype=np.uint8) * 2)[:, None, None, None]).astype(np.uint8)


def encode_bframes(frames: np.ndarray, bframes: int, gop: int) -> bytes:
    return encode_h264(frames, 16, {"crf": "18", "preset": "veryfast", "g": str(gop), "bf": str(bframes)})


def keyframes(data: bytes) -> list[int]:
    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    order = {pts: i for i, pts in enumerate(sorted(p.pts for p in packets))}
    return sorted(order[p.pts] for p in packets if p.is_keyframe)


FRAMES = moving_frames(70)
VIDEOS = {
    "gop16": encode_mp4(FRAMES, 16.0),  # fastdecode: CAVLC, no B-frame weighting, no deblocking
    "gop16_default_tune": encode_mp4(FRAMES, 16.0, fast_decode=False),
    "default_gop": encode_mp4(FRAMES, 16.0, gop=None, fast_decode=False),
    "gop10_no_bframes": encode_bframes(FRAMES, 0, 10),
    "gop10_bframes3": encode_bframes(FRAMES, 3, 10),
}


def test_gop_sets_the_keyframe_interval():
    assert keyframes(VIDEOS["gop16"]) == keyframes(VIDEOS["gop16_default_tune"]) == [0, 16, 32, 48, 64]
    assert keyframes(VIDEOS["default_gop"]) == [0]
    assert keyframes(VIDEOS["gop10_bframes3"]) == list(range(0, 70, 10))


@pytest.mark.parametrize("name", VIDEOS)
@pytest.mark.parametrize("threads", [0, 1])
def test_seeking_decode_equals_the_full_decode(name, threads):
    data = VIDEOS[name]
    full = decode_mp4_reference(data)
    assert full.shape == (70, 48, 64, 3)
    assert np.array_equal(decode_mp4(data, threads=threads), full)
    rng = np.random.default_rng(0)
    picks = [
        [*range(20, 36), 5],  # a clip, then a reference frame before it
        [*range(50, 66), 69],  # across a keyframe, then the last frame
        [0, 69, 0, 33],  # repeats and far jumps
        list(range(30, 60, 3)),  # strided
        *[[*range(s, s + 16), int(r)] for s, r in zip(rng.integers(0, 55, 6), rng.integers(0, 70, 6))],
    ]
    for indices in picks:
        assert np.array_equal(decode_mp4(data, indices, threads=threads), full[indices]), indices


def test_missing_frames_raise():
    with pytest.raises(ValueError, match="70 frames"):
        decode_mp4(VIDEOS["gop16"], [3, 70])
    with pytest.raises(ValueError):
        decode_mp4(VIDEOS["gop16"][: len(VIDEOS["gop16"]) // 2], [60])
