"""Start-up checks of a ``unianimate`` run: sizes, frame counts, checkpoints and weights, checked
once the classes are built and before any work starts, each failing with one
:class:`~unianimate.errors.InputError` line that names the input and what was expected.

The data side is read through its ``hparams`` (``height``, ``width``, ``num_frames``, ...), so the
core imports nothing from ``datamodules/``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unianimate.errors import InputError, MissingInputError

LAST_IF_ANY = "last_if_any"  # --ckpt_path value: the newest last.ckpt when there is one, else fresh


def pixel_multiple(module: nn.Module) -> int:
    """Pixel sizes must be multiples of this: the VAE factor times the UNet's downsampling."""
    factor = module.encoders.downsample_factor
    return factor * getattr(module.denoiser.unet, "size_multiple", 1)


def check_sizes(module: nn.Module, data_hparams: Any, subcommand: str) -> None:
    """Height and width multiples of the VAE factor x the UNet's downsampling; frame counts the
    sampler can use (chain mode hands the last frame on: segments of at least 2 frames)."""
    multiple = pixel_multiple(module)
    for name in ("height", "width"):
        value = data_hparams.get(name)
        if value is not None and (value <= 0 or value % multiple):
            raise InputError(
                f"data {name}={value}: expected a positive multiple of {multiple} "
                f"(the VAE's factor {module.encoders.downsample_factor} x the UNet's downsampling "
                f"{multiple // module.encoders.downsample_factor}), e.g. {max(multiple, value // multiple * multiple)}"
            )
    hp = module.hparams
    # fit / validate sample val_sample_batches clips of num_frames; test / predict use test clips
    samples = subcommand in ("test", "predict") or hp.get("val_sample_batches", 0) > 0
    key = "num_frames" if subcommand in ("fit", "validate") else "test_num_frames"
    frames = data_hparams.get(key) or data_hparams.get("num_frames")
    if frames is None:
        return  # predict from a pose file: its own frame count, checked when it is read
    if frames < 1:
        raise InputError(f"data {key}={frames}: expected at least 1 frame per clip")
    long_video = module.long_video
    if samples and long_video.mode == "chain" and min(long_video.segment_frames, frames) < 2:
        raise InputError(
            f"data {key}={frames}: chain-mode sampling (validation videos, test, predict) needs clips of "
            "at least 2 frames (each segment hands its last frame to the next); use 2 or more frames, "
            "or --model.val_sample_batches 0 to train without validation videos"
        )


def load_checkpoint(path: str | Path, what: str = "ckpt_path") -> dict:
    """``torch.load`` with ``weights_only=True`` (never anything else); an unreadable file is one
    line naming it, without torch's advice to unpickle untrusted code."""
    file = Path(path)
    if not file.exists():
        raise MissingInputError(f"{what}: no file at '{path}'")
    if file.is_dir():
        raise InputError(
            f"{what}: '{path}' is a folder (a DeepSpeed checkpoint?); expected one checkpoint file "
            "(consolidate with: python tools/convert_checkpoint.py zero FOLDER out.ckpt)"
        )
    if not zipfile.is_zipfile(file):
        raise InputError(
            f"{what}: '{path}' is not a checkpoint (not a torch.save archive); expected a file written "
            "by torch.save / Lightning"
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        if "weights_only" in reason or "Weights only" in reason:
            reason = "it holds objects other than tensors and plain containers, which are not loaded"
        raise InputError(
            f"{what}: '{path}' is not a readable checkpoint ({reason}); expected a file written "
            "by torch.save / Lightning"
        ) from error


def check_state_dict(
    saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str, what: str = "ckpt_path"
) -> None:
    """One line when ``saved`` is not a state dict of the model that ``expected`` describes."""
    wrong = [k for k in saved.keys() & expected.keys() if tuple(saved[k].shape) != tuple(expected[k].shape)]
    missing, unexpected = expected.keys() - saved.keys(), saved.keys() - expected.keys()
    if not (wrong or missing or unexpected):
        return
    parts = []
    if wrong:
        key = sorted(wrong)[0]
        parts.append(
            f"{len(wrong)} tensor(s) of other sizes, e.g. {key} {tuple(saved[key].shape)} in the file "
            f"vs {tuple(expected[key].shape)} in this model"
        )
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {sorted(missing)[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {sorted(unexpected)[0]}")
    raise InputError(
        f"{what}: '{path}' is a checkpoint of another model ({'; '.join(parts)}); "
        "expected one of the model this config builds"
    )


def check_checkpoint(module: nn.Module, path: str) -> int:
    """A Lightning checkpoint that fits ``module``; returns its global step."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(
            f"ckpt_path: '{path}' has no 'state_dict': expected a Lightning checkpoint "
            "(a denoiser state dict or .safetensors goes to --model.init_weights)"
        )
    # Expected: what the module itself writes into a checkpoint (its on_save_checkpoint leaves out
    # the frozen encoders, and with LoRA the base weights).
    probe = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(probe)
    expected = probe["state_dict"]
    saved = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoders.")}
    check_state_dict(saved, expected, path)
    return int(checkpoint.get("global_step", 0))


def find_last_checkpoint(roots: list[Path]) -> Path | None:
    """The newest (by modification time) ``last.ckpt`` / ``last-vN.ckpt`` / ``hpc_ckpt_N.ckpt``
    (Lightning's SLURM requeue checkpoint) under ``roots``, every ``version_N`` included."""
    found = {
        path
        for root in roots
        if root.is_dir()
        for pattern in ("last.ckpt", "last-v*.ckpt", "hpc_ckpt_*.ckpt")
        for path in root.rglob(pattern)
    }
    return max(found, key=lambda p: p.stat().st_mtime, default=None)
