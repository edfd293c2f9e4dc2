"""One training example from one shard sample (SPEC §5): clip sampling, resize/crop, pose rendering.

A clip is ``num_frames`` frames with stride ``frame_interval`` from a random start; the reference
frame is drawn at random from the whole video. The frames are resized keeping the aspect ratio
and cropped (centre or random), or stretched to the training size as the release did; the same
transform is applied to the keypoints before the skeletons are rendered at the training size.
Videos shorter than the clip are skipped, never padded.

With ``use_latent_cache`` the sample's ``latents.npy`` (f, 4, h, w, float16 VAE latents of the
frames at the training size) and ``clip.npy`` (f, d, per-frame CLIP image embeddings) replace the
mp4; the poses are still rendered, with the deterministic transform the cache tool applied
(centre crop or stretch of the source size recorded in the sample's ``json``). A cache built with
frames (``frames.npy``, packed 4:2:0 planes at the training size) also gives the clip's ``video``,
for the pixel local-image stream.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from einops import rearrange
from torch.utils.data import get_worker_info

from datamodules.colour import pack_yuv420
from datamodules.format import PoseSequence, YUV420Frames, decode_mp4_yuv420
from datamodules.pose_render import PoseStyle, render_pose_index_sequence
from datamodules.stream import SkipSample
from unianimate.errors import InputError

Resize = Literal["center_crop", "random_crop", "stretch"]


@dataclass(frozen=True)
class CropBox:
    """Resize the source (src_h, src_w) to (scaled_h, scaled_w), then take (height, width) at (top, left)."""

    scaled_h: int
    scaled_w: int
    top: int
    left: int
    height: int
    width: int


def crop_box(
    src_h: int,
    src_w: int,
    height: int,
    width: int,
    mode: Resize,
    rng: np.random.Generator,
    even: bool = False,
) -> CropBox:
    """``even``: crop at even offsets only, so a 4:2:0 frame's chroma (half size) crops along."""
    if mode == "stretch":
        return CropBox(height, width, 0, 0, height, width)
    scale = max(height / src_h, width / src_w)  # cover the target, then crop the excess
    scaled_h, scaled_w = max(height, round(src_h * scale)), max(width, round(src_w * scale))
    step = 2 if even else 1
    if mode == "center_crop":
        top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
        top, left = top - top % step, left - left % step
    elif mode == "random_crop":
        top = step * int(rng.integers((scaled_h - height) // step + 1))
        left = step * int(rng.integers((scaled_w - width) // step + 1))
    else:
        raise ValueError(f"resize must be center_crop, random_crop or stretch, got {mode!r}")
    return CropBox(scaled_h, scaled_w, top, left, height, width)


def _resize_crop(
    images: np.ndarray, size: tuple[int, int], top: int, left: int, height: int, width: int
) -> np.ndarray:
    """uint8 (n, H0, W0[, c]) -> resized to ``size`` (h, w), then cropped: (n, height, width[, c]);
    a view when the images need no resizing (cv2.resize would copy them unchanged)."""
    rows, cols = slice(top, top + height), slice(left, left + width)
    if images.shape[1:3] == size:
        return images[:, rows, cols]
    shrinking = size[0] * size[1] < images.shape[1] * images.shape[2]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = np.empty((len(images), height, width, *images.shape[3:]), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, size[::-1], interpolation=interpolation)[rows, cols]
    return out


def apply_box_frames(frames: np.ndarray, box: CropBox) -> np.ndarray:
    """uint8 (f, H0, W0, 3) -> (f, height, width, 3); a view when the frames need no resizing."""
    return _resize_crop(frames, (box.scaled_h, box.scaled_w), box.top, box.left, box.height, box.width)


def apply_box_yuv420(frames: YUV420Frames, box: CropBox) -> np.ndarray:
    """4:2:0 frames -> packed (f, 3 height / 2, width) (``datamodules.colour.pack_yuv420``): each
    plane resized and cropped, the chroma at half size; the box must have even offsets and sizes."""
    if box.top % 2 or box.left % 2 or box.height % 2 or box.width % 2:
        raise ValueError(f"4:2:0 frames crop at even offsets to even sizes, got {box}")
    y = _resize_crop(frames.y, (box.scaled_h, box.scaled_w), box.top, box.left, box.height, box.width)
    chroma = (-(-box.scaled_h // 2), -(-box.scaled_w // 2))  # ceil: an odd size keeps its last column
    uv = frames.uv.reshape(-1, *frames.uv.shape[2:])  # (f 2) planes
    uv = _resize_crop(uv, chroma, box.top // 2, box.left // 2, box.height // 2, box.width // 2)
    return pack_yuv420(y, uv.reshape(len(frames.y), 2, *uv.shape[1:]))


def apply_box_points(points: np.ndarray, box: CropBox) -> np.ndarray:
    """Normalised (..., 3) keypoints of the source -> normalised in the crop; scores kept."""
    out = points.astype(np.float32, copy=True)
    out[..., 0] = (points[..., 0] * box.scaled_w - box.left) / box.width
    out[..., 1] = (points[..., 1] * box.scaled_h - box.top) / box.height
    return out


def apply_box_pose(pose: PoseSequence, box: CropBox) -> PoseSequence:
    face = None if pose.face is None else apply_box_points(pose.face, box)
    return PoseSequence(apply_box_points(pose.body, box), apply_box_points(pose.hands, box), face)


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class ClipExample:
    """``make_example`` for :class:`datamodules.stream.ShardStream`: raw sample -> example dict.

    Video example: ``video`` (f, 3H/2, W) and ``ref_image`` (3H/2, W), the decoder's YUV 4:2:0
    planes packed (:func:`datamodules.colour.pack_yuv420`) with their ``video_colour`` code;
    ``reference_outside_clip`` (evaluation): the reference is drawn from the frames the clip does
    not contain, so copying it never reproduces a target frame.
    ``pose`` (f, H, W) and ``ref_pose`` (H, W), skeletons as uint8 indices into
    :data:`datamodules.pose_render.PALETTE`; ``keypoints``; ``key``.
    :meth:`datamodules.video_datamodule.VideoPoseDataModule.to_float` (on the device, after the
    transfer) makes them float RGB, channels-first: an eighth of the bytes of float RGB (a twelfth
    for the skeletons) through the workers' shared memory, and no colour conversion, float pass or
    transpose on their CPUs. Crops start at even offsets (4:2:0 chroma crops along) and the
    training size must be even.
    Latent-cache example: float32 ``latent`` (4, f, h, w), ``ref_latent`` (4, h, w),
    ``clip_embed`` (d,) instead of ``video`` / ``ref_image``; ``video`` too where the cache kept
    the frames.
    """

    def __init__(
        self,
        num_frames: int,
        frame_interval: int,
        height: int,
        width: int,
        resize: Resize = "center_crop",
        draw_hands: bool = True,
        draw_face: bool = False,
        pose_jitter: bool = False,
        use_latent_cache: bool = False,
        pose_style: PoseStyle = "release",
        reference_outside_clip: bool = False,
    ) -> None:
        if use_latent_cache and resize == "random_crop":
            raise InputError("the latent cache is encoded once: use resize=center_crop or stretch with it")
        if height % 2 or width % 2 or height <= 0 or width <= 0:
            raise InputError(
                f"data height x width = {height}x{width}: expected positive even sizes (4:2:0 video)"
            )
        self.num_frames, self.frame_interval = num_frames, frame_interval
        self.height, self.width, self.resize = height, width, resize
        self.draw_hands, self.draw_face, self.pose_style = draw_hands, draw_face, pose_style
        self.pose_jitter, self.use_latent_cache = pose_jitter, use_latent_cache
        self.reference_outside_clip = reference_outside_clip

    def _pose(self, sample: dict) -> PoseSequence:
        try:
            if "pose.npz" in sample:
                return PoseSequence.from_npz_bytes(sample["pose.npz"])
            if "pose.json" in sample:
                return PoseSequence.from_json_bytes(sample["pose.json"])
        except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exn:
            # Corrupt pose data only: an interpreter error must fail loudly, not drop a sample.
            raise SkipSample("bad_pose", repr(exn)) from exn
        raise SkipSample("missing_pose")

    def _indices(self, length: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        span = (self.num_frames - 1) * self.frame_interval + 1
        if length < span:
            raise SkipSample("too_short", f"{length} frames < clip span {span}")
        start = int(rng.integers(length - span + 1))
        clip = start + self.frame_interval * np.arange(self.num_frames)
        if self.reference_outside_clip and length > self.num_frames:
            # Evaluation: a reference that is one of the target frames would be a free copy.
            others = np.setdiff1d(np.arange(length), clip)
            return clip, int(others[rng.integers(len(others))])
        return clip, int(rng.integers(length))

    def render(self, pose: PoseSequence) -> torch.Tensor:
        """uint8 (f, H, W) skeletons as indices into :data:`datamodules.pose_render.PALETTE`, drawn
        as this example draws them (size, hands, face, style)."""
        frames = render_pose_index_sequence(
            pose,
            self.height,
            self.width,
            draw_hands=self.draw_hands,
            draw_face=self.draw_face,
            style=self.pose_style,
        )
        return torch.from_numpy(frames)

    def _poses(self, pose: PoseSequence, clip: np.ndarray, ref: int, box: CropBox, rng) -> dict:
        clip_pose, ref_pose = pose.frames(clip), pose.frames([ref])
        if self.pose_jitter:
            from datamodules.pose_align import random_pose_jitter  # lazy: an optional augmentation

            clip_pose = random_pose_jitter(clip_pose, rng)
        clip_pose = apply_box_pose(clip_pose, box)
        return {
            "pose": self.render(clip_pose),
            "ref_pose": self.render(apply_box_pose(ref_pose, box))[0],
            # The driving body keypoints in the clip's frame (f, 20, 3): pose-fidelity metrics.
            "keypoints": torch.from_numpy(np.ascontiguousarray(clip_pose.body, dtype=np.float32)),
        }

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        if self.use_latent_cache:
            return self._from_latents(sample, rng)
        if "mp4" not in sample:
            raise SkipSample("missing_video")
        pose = self._pose(sample)
        clip, ref = self._indices(len(pose), rng)
        # Frame threads pay off in a single process; DataLoader workers already fill the cores.
        threads = 1 if get_worker_info() is not None else 0
        try:
            frames = decode_mp4_yuv420(sample["mp4"], [*clip.tolist(), ref], threads=threads)
        except Exception as exn:
            raise SkipSample("bad_video", repr(exn)) from exn
        src_h, src_w = frames.y.shape[1:]
        box = crop_box(src_h, src_w, self.height, self.width, self.resize, rng, even=True)
        packed = apply_box_yuv420(frames, box)
        return {
            "video": torch.from_numpy(packed[:-1]),  # views: collate copies them once
            "ref_image": torch.from_numpy(packed[-1]),
            "video_colour": frames.colour,
            **self._poses(pose, clip, ref, box, rng),
            "key": sample["__key__"],
        }

    def _from_latents(self, sample: dict, rng: np.random.Generator) -> dict:
        if "latents.npy" not in sample or "clip.npy" not in sample or "json" not in sample:
            raise SkipSample("missing_latents")
        pose = self._pose(sample)
        try:
            latents, embeds = _load_npy(sample["latents.npy"]), _load_npy(sample["clip.npy"])
            meta = json.loads(sample["json"])
            src_h, src_w = int(meta["height"]), int(meta["width"])
            # Caches written before the factor was recorded all came from SD's /8 VAE.
            factor = int(meta.get("latent_cache", {}).get("downsample", 8))
            planes = colour = None
            if "frames.npy" in sample:  # a cache built with frames: their packed planes and colour code
                planes, colour = _load_npy(sample["frames.npy"]), int(meta["latent_cache"]["colour"])
        except Exception as exn:
            raise SkipSample("bad_latents", repr(exn)) from exn
        if latents.ndim != 4 or latents.shape[0] != len(pose) or embeds.shape[0] != len(pose):
            raise SkipSample(
                "bad_latents", f"latents {latents.shape}, clip {embeds.shape}, {len(pose)} poses"
            )
        if (latents.shape[2] * factor, latents.shape[3] * factor) != (self.height, self.width):
            raise SkipSample(
                "latent_size", f"latents {latents.shape[2:]} (/{factor}) for {self.height}x{self.width}"
            )
        if planes is not None and planes.shape != (len(pose), self.height * 3 // 2, self.width):
            raise SkipSample(
                "bad_latents", f"frames {planes.shape} for {len(pose)} poses of {self.height}x{self.width}"
            )
        clip, ref = self._indices(len(pose), rng)
        box = crop_box(src_h, src_w, self.height, self.width, self.resize, rng, even=True)  # as the cache
        latent = torch.from_numpy(latents[clip].astype(np.float32))
        pixels = {}
        if planes is not None:  # the reference's pixels too: the local-image stream may see it
            pixels = {"video": torch.from_numpy(planes[clip]), "ref_image": torch.from_numpy(planes[ref])}
            pixels["video_colour"] = colour
        return {
            "latent": rearrange(latent, "f c h w -> c f h w").contiguous(),
            "ref_latent": torch.from_numpy(latents[ref].astype(np.float32)),
            "clip_embed": torch.from_numpy(embeds[ref].astype(np.float32)),
            **pixels,
            **self._poses(pose, clip, ref, box, rng),
            "key": sample["__key__"],
        }
