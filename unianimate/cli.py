"""The ``unianimate`` command: Lightning's CLI over the UniAnimate module (SPEC §7)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.cli import LightningCLI

from unianimate.module import UniAnimateModule

# Config keys that were renamed: the old key stops the run with one line naming the new one.
RENAMED = {
    "model.model": "model.denoiser",
    "data.pose": "data.driving (the driving poses or video)",
    "first_frame_stream": "local_image_stream (the release's pixel image stream)",
    "dropout.p_first_frame": "model.dropout.p_local_image",
    "model.long_video_mode": "model.long_video.mode",
    "model.segment_frames": "model.long_video.segment_frames",
    "model.overlap": "model.long_video.overlap",
    "model.eval_protocol": "evaluation.protocol",
    "model.random_metric_weights": "evaluation.random_metric_weights",
    "model.pose_fidelity": "evaluation.pose_fidelity",
    "unet.mamba_d_state": "unet.temporal: {class_path: MambaTemporal, init_args: {d_state: ...}}",
    "unet.mamba_d_conv": "unet.temporal: {class_path: MambaTemporal, init_args: {d_conv: ...}}",
    "unet.mamba_expand": "unet.temporal: {class_path: MambaTemporal, init_args: {expand: ...}}",
    "unet.mamba_bidirectional": "unet.temporal: {class_path: MambaTemporal, init_args: {bidirectional: ...}}",
    "unet.scan_backend": "unet.temporal: {class_path: MambaTemporal, init_args: {scan_backend: ...}}",
}


class UniAnimateCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict``; configs compose with several ``--config``.

    ``--evaluation.*`` configures the metrics of ``unianimate test``
    (:class:`callbacks.video_evaluation.VideoEvaluation`, always present).
    """

    def add_arguments_to_parser(self, parser) -> None:
        from callbacks.video_evaluation import VideoEvaluation

        parser.add_lightning_class_args(VideoEvaluation, "evaluation")


# Expected, and noise for users: the frozen encoders are in eval mode on purpose (one place,
# unianimate/models/frozen.py), and torchdata calls a deprecated torch hook internally.
QUIET = (r"Found \d+ module\(s\) in eval mode", r"'set_vital' is deprecated")


def _flat_keys(tree: object, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return []
    keys = []
    for key, value in tree.items():
        if key in ("class_path", "init_args"):
            keys += _flat_keys(value, prefix)
            continue
        name = f"{prefix}{key}"
        keys += [name, *_flat_keys(value, name + ".")]
    return keys


def renamed_keys(args: list[str]) -> list[str]:
    """One line per old key in the command line or its ``--config`` files."""
    keys = []
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg != "--config":
            keys.append(arg[2:].split("=", 1)[0].replace(".init_args", ""))
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and Path(value).is_file():
            keys += _flat_keys(yaml.safe_load(Path(value).read_text()))
    lines = []
    for key in keys:
        matches = [
            old for old in RENAMED if key == old or key.endswith("." + old) or key.startswith(old + ".")
        ]
        if matches:
            lines.append(f"config key '{key}' was renamed: use {RENAMED[max(matches, key=len)]}")
    return list(dict.fromkeys(lines))


def main(args: list[str] | None = None, run: bool = True) -> UniAnimateCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
    old = renamed_keys(sys.argv[1:] if args is None else args)
    if old:
        raise SystemExit("error: " + "\nerror: ".join(old))
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    return UniAnimateCLI(
        UniAnimateModule,
        L.LightningDataModule,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def entry_point() -> None:
    """The ``unianimate`` console script (exits 0 on success)."""
    main()


if __name__ == "__main__":
    entry_point()
