"""Inputs of ``unianimate predict``: one reference image and a driving pose sequence of any length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.clips import Resize, apply_box_frames, apply_box_pose, crop_box
from datamodules.format import PoseSequence, decode_mp4
from datamodules.pose_align import align_pose
from datamodules.pose_extract import PoseBackend, make_extractor
from datamodules.pose_render import PALETTE, PoseStyle, pose_frames_to_tensor, render_pose_sequence
from datamodules.video_datamodule import collate, to_float
from unianimate.batch import VideoBatch
from unianimate.errors import InputError, MissingInputError

KEYPOINT_SUFFIXES = (".npz", ".json")
# A skeleton picture is mostly black and its coloured pixels are palette colours (either channel
# order). Measured on H.264 renders of synthetic poses: 80% black, 90% of the rest within 60
# levels of a palette colour; the release's 768x512 renders: 96% and 94%; the example dance video:
# 10% black, 41%; a synthetic RGB video: 0%, 3%.
SKELETON_MIN_BLACK, SKELETON_MIN_PALETTE = 0.5, 0.6

PERSON_THRESHOLD = 0.3  # the renderer's visibility threshold: a person is a visible body point


def _require_person(pose: PoseSequence, message: str) -> None:
    if not (pose.body[0, :, 2] > PERSON_THRESHOLD).any():
        raise InputError(message)


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_keypoints(path: Path, what: str = "pose") -> PoseSequence:
    """Keypoints of ``path`` (.npz / .json, the shard format), or one line naming the file."""
    try:
        data = path.read_bytes()
        if path.suffix == ".npz":
            return PoseSequence.from_npz_bytes(data)
        return PoseSequence.from_json_bytes(data)
    except Exception as error:  # noqa: BLE001 - every way a keypoint file can be wrong is the user's
        raise InputError(
            f"{what}: '{path}' is not a keypoint file ({_reason(error)}); expected {path.suffix} with "
            "body (F, 20, 3) and hands (F, 2, 21, 3) [and face] in normalised coordinates (datamodules/format.py)"
        ) from error


def skeleton_likeness(frames: np.ndarray) -> tuple[float, float]:
    """(fraction of black pixels, fraction of the other pixels near a palette colour) of RGB frames."""
    sample = frames[:: max(1, len(frames) // 8)].astype(np.int16)
    bright = sample.max(-1) >= 40
    coloured = sample[bright]
    if len(coloured) == 0:
        return 1.0, 0.0
    coloured = coloured[:: max(1, len(coloured) // 20000)]
    palette = PALETTE[1:][PALETTE[1:].max(-1) > 0].astype(np.int16)
    palette = np.concatenate([palette, palette[:, ::-1]])
    distance = np.abs(coloured[:, None, :] - palette[None]).max(-1).min(1)
    return float(1 - bright.mean()), float((distance < 60).mean())


class _OneItem(Dataset):
    def __init__(self, item: dict) -> None:
        self.item = item

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return self.item


class AnimateDataModule(L.LightningDataModule):
    """A reference image and driving poses -> one predict batch.

    Args:
        reference: the reference image (any size; resized keeping the aspect ratio, then cropped).
        driving: driving poses: keypoints in the shard format (``.npz`` / ``.json``, rendered here at the
            model's size), an mp4 of already rendered skeleton pictures (RGB as written by
            ``tools/extract_pose.py --render``), or, with ``pose_backend`` set, an mp4 of a person.
            Any number of frames.
        reference_pose: the reference's own keypoints (``.npz`` / ``.json``, first frame used). By
            default the first driving frame stands in, which is right when the driving video shows the
            reference person (self-reenactment) and approximate otherwise; align first with
            ``tools/align_pose.py`` to drive someone else.
        height, width: the model's pixel size.
        max_frames: cut the driving sequence (``None``: all frames).
        frame_interval: take every n-th driving frame.
        draw_hands, pose_style: how the skeletons are drawn; use what the model was trained with
            (the demo: ``pose_style: proportional``).
        pose_source_size: (H, W) of the video the keypoints were extracted from (they are
            normalised to it); default: the reference image's size.
        pose_backend: with a backend, ``driving`` is a video of a person: its poses and the
            reference photo's own pose are extracted (``datamodules.pose_extract``), the driving
            poses are aligned to the photo's (``datamodules.pose_align``, the release's alignment)
            and rendered. ``None``: an mp4 is a rendered skeleton video.
        pose_backend_args: the backend's arguments (DWPose: local ``detector`` / ``pose_model`` .onnx).
    """

    def __init__(
        self,
        reference: str,
        driving: str,
        reference_pose: str | None = None,
        height: int = 64,
        width: int = 48,
        resize: Resize = "center_crop",
        max_frames: int | None = None,
        frame_interval: int = 1,
        draw_hands: bool = True,
        pose_style: PoseStyle = "release",
        pose_source_size: tuple[int, int] | None = None,
        pose_backend: PoseBackend | None = None,
        pose_backend_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("reference", reference),
            ("driving", driving),
            ("reference_pose", reference_pose),
        ):
            if value is not None and not Path(value).is_file():
                raise MissingInputError(f"{name}: no file at '{value}'")
        self.save_hyperparameters()

    def _render(self, pose: PoseSequence, src_h: int, src_w: int) -> np.ndarray:
        h, w = self.hparams.height, self.hparams.width
        box = crop_box(src_h, src_w, h, w, self.hparams.resize, np.random.default_rng(0))
        return render_pose_sequence(
            apply_box_pose(pose, box), h, w, draw_hands=self.hparams.draw_hands, style=self.hparams.pose_style
        )

    def build_batch(self) -> dict:
        hp = self.hparams
        try:
            image = np.asarray(Image.open(hp.reference).convert("RGB"))
        except Exception as error:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise InputError(
                f"reference: '{hp.reference}' is not a readable image ({_reason(error)}); expected a jpg / png"
            ) from error
        src_h, src_w = image.shape[:2]
        box = crop_box(src_h, src_w, hp.height, hp.width, hp.resize, np.random.default_rng(0))
        ref = torch.from_numpy(
            np.array(apply_box_frames(image[None], box)[0])
        )  # uint8 H W 3; to_float makes it float
        step = slice(None, hp.max_frames and hp.max_frames * hp.frame_interval, hp.frame_interval)
        source = Path(hp.driving)
        ref_pose = None
        if source.suffix in KEYPOINT_SUFFIXES:
            poses = load_keypoints(source, "driving").frames(step)
            pose_h, pose_w = hp.pose_source_size or (src_h, src_w)
            pictures = self._render(poses, pose_h, pose_w)
        else:
            try:
                frames = decode_mp4(str(source))[step]
            except Exception as error:  # noqa: BLE001 - PyAV raises many kinds for a bad file
                raise InputError(
                    f"driving: '{source}' is not a readable video ({_reason(error)}); expected keypoints "
                    "(.npz / .json), an mp4 of rendered skeletons, or with --data.pose_backend an mp4 of a person"
                ) from error
        if source.suffix not in KEYPOINT_SUFFIXES and hp.pose_backend is not None:
            ref_pose, pictures = self._poses_from_person_video(image, frames)
        elif source.suffix not in KEYPOINT_SUFFIXES:
            black, palette = skeleton_likeness(frames) if len(frames) else (1.0, 1.0)
            if black < SKELETON_MIN_BLACK or palette < SKELETON_MIN_PALETTE:
                raise InputError(
                    f"driving: '{source}' does not look like rendered skeletons ({black:.0%} black pixels, "
                    f"{palette:.0%} of the rest in the skeleton palette; expected a black background "
                    "with the palette's limb colours): give keypoints (.npz / .json, tools/extract_pose.py) "
                    "or render them (tools/extract_pose.py --render), or set --data.pose_backend for a video of a person"
                )
            pbox = crop_box(
                frames.shape[1], frames.shape[2], hp.height, hp.width, hp.resize, np.random.default_rng(0)
            )
            # An RGB skeleton video -> the release's channel order, which the model sees.
            pictures = np.ascontiguousarray(apply_box_frames(frames, pbox)[..., ::-1])
        if len(pictures) == 0:
            raise InputError(f"driving: no frames in '{hp.driving}'")
        if ref_pose is not None:
            pass  # extracted from the photo
        elif hp.reference_pose is not None:
            ref_pose = self._render(
                load_keypoints(Path(hp.reference_pose), "reference_pose").frames(slice(0, 1)), src_h, src_w
            )[0]
        else:
            ref_pose = pictures[0]
        return {
            "ref_image": ref,
            "ref_pose": pose_frames_to_tensor(ref_pose[None])[:, 0],
            "pose": pose_frames_to_tensor(pictures),
            "key": source.stem,
        }

    def _poses_from_person_video(
        self, image: np.ndarray, frames: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Extract the photo's and the video's poses, align the video's to the photo's, render both at
        the model's size: (reference pose picture H W 3, driving pictures f H W 3)."""
        hp = self.hparams
        if len(frames) == 0:
            raise InputError(f"driving: no frames in '{hp.driving}'")
        extract = make_extractor(hp.pose_backend, **(hp.pose_backend_args or {}))
        reference = extract(image[None])
        _require_person(
            reference, f"reference: no person found in '{hp.reference}' (pose backend {hp.pose_backend})"
        )
        driving = extract(frames, progress=True)
        _require_person(
            driving,
            f"driving: no person found in the first frame of '{hp.driving}' (pose backend {hp.pose_backend})",
        )
        src_h, src_w = image.shape[:2]
        aligned = align_pose(reference, driving, reference_hw=(src_h, src_w), driving_hw=frames.shape[1:3])
        self.extracted_reference_pose, self.aligned_pose = reference, aligned  # for tools and tests
        return self._render(reference, src_h, src_w)[0], self._render(aligned, src_h, src_w)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_OneItem(self.build_batch()), batch_size=1, collate_fn=collate)

    def on_after_batch_transfer(self, batch: VideoBatch, dataloader_idx: int) -> VideoBatch:
        return to_float(batch)
