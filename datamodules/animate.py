"""Inputs of ``unianimate predict``: one reference image and a driving pose sequence of any length."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.clips import Resize, apply_box_frames, apply_box_pose, crop_box
from datamodules.format import PoseSequence, decode_mp4
from datamodules.pose_render import PoseStyle, pose_frames_to_tensor, render_pose_sequence

KEYPOINT_SUFFIXES = (".npz", ".json")


def load_keypoints(path: Path) -> PoseSequence:
    data = path.read_bytes()
    return PoseSequence.from_npz_bytes(data) if path.suffix == ".npz" else PoseSequence.from_json_bytes(data)


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
        pose: driving poses: keypoints in the shard format (``.npz`` / ``.json``, rendered here at the
            model's size) or an mp4 of already rendered skeleton pictures (RGB as written by
            ``tools/extract_pose.py --render``). Any number of frames.
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
    """

    def __init__(
        self,
        reference: str,
        pose: str,
        reference_pose: str | None = None,
        height: int = 64,
        width: int = 48,
        resize: Resize = "center_crop",
        max_frames: int | None = None,
        frame_interval: int = 1,
        draw_hands: bool = True,
        pose_style: PoseStyle = "release",
        pose_source_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("reference", reference), ("pose", pose), ("reference_pose", reference_pose)):
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(f"{name}: no file at '{value}'")
        self.save_hyperparameters()

    def _render(self, pose: PoseSequence, src_h: int, src_w: int) -> np.ndarray:
        h, w = self.hparams.height, self.hparams.width
        box = crop_box(src_h, src_w, h, w, self.hparams.resize, np.random.default_rng(0))
        return render_pose_sequence(
            apply_box_pose(pose, box), h, w, draw_hands=self.hparams.draw_hands, style=self.hparams.pose_style
        )

    def build_batch(self) -> dict:
        hp = self.hparams
        image = np.asarray(Image.open(hp.reference).convert("RGB"))
        src_h, src_w = image.shape[:2]
        box = crop_box(src_h, src_w, hp.height, hp.width, hp.resize, np.random.default_rng(0))
        ref = torch.from_numpy(apply_box_frames(image[None], box)[0]).permute(2, 0, 1).float() / 127.5 - 1
        step = slice(None, hp.max_frames and hp.max_frames * hp.frame_interval, hp.frame_interval)
        source = Path(hp.pose)
        if source.suffix in KEYPOINT_SUFFIXES:
            poses = load_keypoints(source).frames(step)
            pose_h, pose_w = hp.pose_source_size or (src_h, src_w)
            pictures = self._render(poses, pose_h, pose_w)
        else:
            frames = decode_mp4(str(source))[step]
            pbox = crop_box(
                frames.shape[1], frames.shape[2], hp.height, hp.width, hp.resize, np.random.default_rng(0)
            )
            # An RGB skeleton video -> the release's channel order, which the model sees.
            pictures = np.ascontiguousarray(apply_box_frames(frames, pbox)[..., ::-1])
        if len(pictures) == 0:
            raise ValueError(f"pose: no frames in '{hp.pose}'")
        if hp.reference_pose is not None:
            ref_pose = self._render(
                load_keypoints(Path(hp.reference_pose)).frames(slice(0, 1)), src_h, src_w
            )[0]
        else:
            ref_pose = pictures[0]
        return {
            "ref_image": ref,
            "ref_pose": pose_frames_to_tensor(ref_pose[None])[:, 0],
            "pose": pose_frames_to_tensor(pictures),
            "key": source.stem,
        }

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(_OneItem(self.build_batch()), batch_size=1)
