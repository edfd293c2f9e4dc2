"""The training loader's video path: 4:2:0 planes through the workers, RGB made on the device.

``yuv420_to_rgb`` must give the pixels ``decode_mp4`` (FFmpeg's swscale) gives, so that moving the
conversion off the workers changes nothing the model sees.
"""

from __future__ import annotations

import platform

import av
import numpy as np
import pytest
import torch
from test_format import moving_frames

from datamodules.clips import ClipExample, apply_box_frames, apply_box_yuv420, crop_box
from datamodules.colour import pack_yuv420, yuv420_to_rgb
from datamodules.format import (
    PoseSequence,
    colour_code,
    decode_mp4,
    decode_mp4_yuv420,
    encode_h264,
    encode_mp4,
)

# swscale's x86 code is what yuv420_to_rgb reproduces; its ARM code rounds a little differently.
EXACT = platform.machine().lower() in ("x86_64", "amd64")


def assert_same_pixels(ours: np.ndarray, swscale: np.ndarray) -> None:
    if EXACT:
        np.testing.assert_array_equal(ours, swscale)
    else:
        assert np.abs(ours.astype(int) - swscale).max() <= 2


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p"])
@pytest.mark.parametrize("colorspace", [2, 1, 5])  # unspecified, BT.709, BT.470BG (= BT.601)
def test_conversion_matches_swscale_on_every_value(pix_fmt, colorspace):
    packed = np.random.default_rng(colorspace).integers(0, 256, (48 * 3 // 2, 40), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(packed, format=pix_fmt)
    frame.colorspace = colorspace
    expected = frame.to_ndarray(format="rgb24")  # swscale, honouring the frame's colour space
    code = colour_code(frame)
    assert code == (colorspace == 1) + 2 * (pix_fmt == "yuvj420p")
    ours = yuv420_to_rgb(torch.from_numpy(packed)[None], torch.tensor([code]))[0]
    assert ours.shape == (3, 48, 40) and ours.dtype == torch.uint8
    assert_same_pixels(ours.permute(1, 2, 0).numpy(), expected)


def test_batch_of_mixed_colour_spaces_and_frame_axis():
    rng = np.random.default_rng(0)
    packed = torch.from_numpy(rng.integers(0, 256, (2, 3, 24, 16), dtype=np.uint8))  # b f 3H/2 W
    colour = torch.tensor([1, 2])
    both = yuv420_to_rgb(packed, colour)
    assert both.shape == (2, 3, 3, 16, 16)
    for i in range(2):
        torch.testing.assert_close(
            both[i : i + 1], yuv420_to_rgb(packed[i : i + 1], colour[i : i + 1]), rtol=0, atol=0
        )
    assert not torch.equal(both[0], yuv420_to_rgb(packed[:1], torch.tensor([0]))[0])  # the code matters


def test_decoded_planes_give_decode_mp4s_pixels():
    data = encode_mp4(moving_frames(20), 16.0)
    indices = [3, 4, 5, 17, 0]
    frames = decode_mp4_yuv420(data, indices, threads=1)
    assert frames.y.shape == (5, 48, 64) and frames.uv.shape == (5, 2, 24, 32) and frames.colour == 0
    rgb = yuv420_to_rgb(torch.from_numpy(pack_yuv420(frames.y, frames.uv))[None], torch.tensor([0]))[0]
    assert_same_pixels(rgb.permute(1, 2, 3, 0).numpy(), decode_mp4(data, indices, threads=1))
    everything = decode_mp4_yuv420(data)
    assert len(everything.y) == 20 and np.array_equal(everything.y[indices], frames.y)


def test_even_crops_and_resizes():
    data = encode_mp4(moving_frames(6), 16.0)
    frames = decode_mp4_yuv420(data, list(range(6)))
    rgb = decode_mp4(data, list(range(6)))
    rng = np.random.default_rng(0)
    lefts = set()
    for _ in range(20):  # crops without resizing: exactly decode_mp4's pixels, cropped
        box = crop_box(48, 64, 48, 32, "random_crop", rng, even=True)
        assert (box.scaled_h, box.scaled_w, box.top) == (48, 64, 0) and box.left % 2 == 0
        lefts.add(box.left)
        ours = yuv420_to_rgb(torch.from_numpy(apply_box_yuv420(frames, box))[None], torch.tensor([0]))[0]
        assert_same_pixels(ours.permute(1, 2, 3, 0).numpy(), apply_box_frames(rgb, box))
    assert len(lefts) > 5
    # Resizing the planes instead of the RGB frames: the same picture within a level or two on
    # smooth content. Chroma is resized at half size, so sharp colour edges differ more (on the
    # example dance video at 768 x 512: half a level on average, 5 levels at the 99th percentile).
    ys, xs = np.mgrid[0:96, 0:128]
    smooth = np.stack([ys, xs, 255 - (ys + xs) // 2], -1).clip(0, 255).astype(np.uint8)
    data = encode_mp4(np.stack([smooth] * 2), 16.0)
    frames, rgb = decode_mp4_yuv420(data, [0, 1]), decode_mp4(data, [0, 1])
    box = crop_box(96, 128, 40, 40, "center_crop", rng, even=True)
    ours = yuv420_to_rgb(torch.from_numpy(apply_box_yuv420(frames, box))[None], torch.tensor([0]))[0]
    diff = np.abs(ours.permute(1, 2, 3, 0).numpy().astype(int) - apply_box_frames(rgb, box))
    assert ours.shape == (3, 2, 40, 40) and diff.mean() < 1.5 and diff.max() <= 8
    with pytest.raises(ValueError, match="even"):
        apply_box_yuv420(frames, crop_box(48, 64, 33, 24, "center_crop", rng))
    with pytest.raises(ValueError, match="even"):
        ClipExample(4, 1, 33, 24)


def test_clip_example_video_is_decode_mp4s():
    video = moving_frames(12)
    rng = np.random.default_rng(0)
    body = np.concatenate([rng.uniform(0.2, 0.8, (12, 20, 2)), np.ones((12, 20, 1))], -1)
    pose = PoseSequence(body.astype(np.float32), np.zeros((12, 2, 21, 3), np.float32))
    sample = {"__key__": "k", "mp4": encode_mp4(video, 16.0), "pose.npz": pose.to_npz_bytes()}
    example = ClipExample(4, 2, 48, 32, resize="random_crop")(sample, np.random.default_rng(3))
    batch = {"video": example["video"][None], "video_colour": torch.tensor([example["video_colour"]])}
    rgb = yuv420_to_rgb(batch["video"], batch["video_colour"])[0].permute(1, 2, 3, 0).numpy()
    decoded = decode_mp4(sample["mp4"])
    # find the clip: every frame and crop differs, so one start and one offset match the first frame
    close = [
        (start, left)
        for start in range(12 - 6)
        for left in range(0, 64 - 32 + 1, 2)
        if np.abs(rgb[0].astype(int) - decoded[start, :, left : left + 32]).max() <= (0 if EXACT else 2)
    ]
    assert len(close) == 1, close
    start, left = close[0]
    assert_same_pixels(rgb, decoded[start : start + 7 : 2, :, left : left + 32])


def test_other_pixel_formats_and_odd_sizes():
    """A 4:4:4 video of odd size (x264 allows it; 4:2:0 does not) decodes to 4:2:0 planes with
    rounded-up chroma and crops to the even training size."""
    data = encode_h264(moving_frames(6, height=37, width=29), 16, {}, pix_fmt="yuv444p")
    planes = decode_mp4_yuv420(data, [0, 5])
    assert planes.y.shape == (2, 37, 29) and planes.uv.shape == (2, 2, 19, 15)
    body = np.concatenate([np.full((6, 20, 2), 0.5), np.ones((6, 20, 1))], -1).astype(np.float32)
    pose = PoseSequence(body, np.zeros((6, 2, 21, 3), np.float32))
    sample = {"__key__": "k", "mp4": data, "pose.npz": pose.to_npz_bytes()}
    example = ClipExample(4, 1, 32, 24)(sample, np.random.default_rng(0))
    assert example["video"].shape == (4, 48, 24) and example["ref_image"].shape == (48, 24)
    rgb = yuv420_to_rgb(example["video"][None], torch.tensor([example["video_colour"]]))
    assert rgb.shape == (1, 3, 4, 32, 24)
