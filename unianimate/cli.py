"""The ``unianimate`` command: Lightning's CLI over the UniAnimate module (SPEC §7)."""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

import lightning as L
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from unianimate import stop_signals
from unianimate.checks import (
    LAST_IF_ANY,
    check_checkpoint,
    check_sizes,
    find_last_checkpoint,
    load_checkpoint,
)
from unianimate.errors import InputError, StoppedBySignal, user_errors_as_one_line
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
    Before any work: sizes and frame counts are checked against the model, ``--ckpt_path last``
    becomes the newest ``last.ckpt`` of the run directory (every ``version_N``), and the checkpoint
    is checked to fit the model (see unianimate/checks.py).
    """

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyperparameters here, before anything is built: an
        # unreadable file is one line naming it (never torch's advice to set weights_only=False).
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            load_checkpoint(path)
        super()._parse_ckpt_path()

    def add_arguments_to_parser(self, parser) -> None:
        from callbacks.video_evaluation import VideoEvaluation

        parser.add_lightning_class_args(VideoEvaluation, "evaluation")
        parser.add_argument(
            "--allow_random_weights",
            type=bool,
            default=False,
            help="test / predict without --ckpt_path: run the untrained model anyway",
        )

    def before_fit(self) -> None:
        self._check_start()

    def before_validate(self) -> None:
        self._check_start()

    def before_test(self) -> None:
        self._check_start()

    def before_predict(self) -> None:
        self._check_start()

    def _check_start(self) -> None:
        config = self.config_init[self.subcommand]
        hparams = self.datamodule.hparams if self.datamodule is not None else {}
        check_sizes(self.model, hparams, self.subcommand)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("last", LAST_IF_ANY):
            ckpt_path = self._newest_last(ckpt_path)
            config["ckpt_path"] = ckpt_path
        if ckpt_path is not None and ckpt_path not in ("best", "hpc", "registry"):
            step = check_checkpoint(self.model, ckpt_path)
            verb = "resuming from" if self.subcommand == "fit" else "weights from"
            rank_zero_info(f"{verb} {ckpt_path} (step {step})")
        elif (
            ckpt_path is None
            and self.subcommand in ("test", "predict")
            and self.model.hparams.get("init_weights") is None
            and not config.get("allow_random_weights")
        ):
            raise InputError(
                f"{self.subcommand}: no trained weights given: expected --ckpt_path CHECKPOINT or "
                "--model.init_weights WEIGHTS (or --allow_random_weights true to run the untrained model)"
            )

    def _newest_last(self, asked: str) -> str | None:
        trainer = self.trainer
        roots = {Path(trainer.default_root_dir)}
        for logger in trainer.loggers:
            if getattr(logger, "root_dir", None):
                roots.add(Path(logger.root_dir))
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath:
                roots.add(Path(callback.dirpath))
        found = find_last_checkpoint(sorted(roots))
        if found is not None:
            return str(found)
        where = ", ".join(str(r) for r in sorted(roots))
        if asked == LAST_IF_ANY:
            rank_zero_info(f"--ckpt_path {LAST_IF_ANY}: no last.ckpt under {where}: starting from step 0")
            return None
        raise InputError(
            f"--ckpt_path last: no last.ckpt under {where}: nothing to resume "
            f"(--ckpt_path {LAST_IF_ANY} starts from step 0 when there is none)"
        )


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
        raise InputError("; ".join(old))
    for message in QUIET:
        warnings.filterwarnings("ignore", message=message)
    restore = stop_signals.remember()  # a stop signal during start-up is not lost (stop_signals.py)
    try:
        return UniAnimateCLI(
            UniAnimateModule,
            L.LightningDataModule,
            subclass_mode_data=True,
            parser_kwargs={"parser_mode": "omegaconf"},
            save_config_kwargs={"overwrite": True},
            args=args,
            run=run,
        )
    except SIGTERMException as stop:  # Lightning's SIGTERM outside training: a SystemExit(0)
        raise StoppedBySignal("SIGTERM: stopped before the end", signal.SIGTERM) from stop
    finally:
        restore()


def entry_point() -> None:
    """The ``unianimate`` console script: exit 0 when the run reached its end; a mistake in the
    input is one line and exit 2; a run stopped by a signal exits 128 + its number.
    ``UNIANIMATE_TRACEBACK=1`` shows the full traceback of input errors."""
    with user_errors_as_one_line():
        main()


if __name__ == "__main__":
    entry_point()
