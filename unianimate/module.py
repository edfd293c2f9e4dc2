"""The LightningModule: frozen encoders + the UniAnimate denoiser + the SPEC §3 objective + EMA.

Test-time evaluation is a callback (``callbacks.video_evaluation.VideoEvaluation``); this module
only generates. Conditions are built in one place, :func:`unianimate.conditions.build_conditions`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from unianimate.batch import VideoBatch
from unianimate.checkpoint_io import rewrite_stale_last_checkpoint
from unianimate.conditions import Conditions, LocalImageSource, build_conditions, to_unit
from unianimate.diffusion.condition_dropout import DROPPED_FIELD, ConditionDropout
from unianimate.diffusion.long_video import LongVideo, generate_long_video
from unianimate.diffusion.objective import DiffusionObjective
from unianimate.diffusion.sampling import DDIMSampler
from unianimate.ema import EMA
from unianimate.lora import LoRA, lora_state_dict, save_merged
from unianimate.metrics import frame_metrics
from unianimate.models.frozen import FrozenEncoders
from unianimate.models.init_weights import load_init_weights
from unianimate.models.unianimate import UniAnimate
from unianimate.optim import LrDecay, lr_factor, parameter_groups

# Loss is also logged per timestep bucket: where in the schedule the model is still bad.
TIMESTEP_BUCKETS = 4


class UniAnimateModule(L.LightningModule):
    """Trains ``denoiser`` on video + pose batches (:class:`unianimate.batch.VideoBatch`).

    Args:
        denoiser: the UniAnimate denoiser (plain PyTorch).
        encoders: frozen CLIP + VAE, from local folders.
        objective: the diffusion objective (unified noise input).
        dropout: per-sample condition dropout.
        sampler: DDIM sampler for validation videos, ``test`` and ``predict``.
        long_video: how clips longer than one segment are generated (chain, window, independent).
        lr, weight_decay, warmup_steps, lr_decay: AdamW with linear warm-up, then a constant
            rate or a cosine decay to 0 at ``trainer.max_steps`` (:mod:`unianimate.optim`). Weight decay applies to weight
            matrices and kernels only: biases, norm scales and Mamba's ``A_log`` and ``D`` (flagged
            ``_no_weight_decay``, as in mamba-ssm) are not decayed.
        ema_decay: EMA of the trainable weights (``None`` turns it off).
        ema_warmup: use the (1 + n) / (10 + n) warm-up of the decay.
        seed: base seed of the fixed validation noise and of sampling.
        val_sample_batches: validation batches that are also fully sampled, for L1 / PSNR / SSIM
            of generated against ground-truth frames (0: loss only).
        init_weights: pretrained denoiser weights, loaded once at the start of fit / test / predict
            unless ``--ckpt_path`` restores a checkpoint (``unianimate.models.init_weights``).
        init_weights_strict: newly initialised or unused keys are an error.
        lora: train LoRA adapters only (peft); the base comes from ``init_weights``.
        local_image_training: what the pixel local-image stream sees in training: the clip's
            first frame (``first_frame``, the release) or the reference image (``reference``, what
            it sees at inference: a model trained on the first frame learns to copy its pose).
    """

    def __init__(
        self,
        denoiser: UniAnimate,
        encoders: FrozenEncoders,
        objective: DiffusionObjective | None = None,
        dropout: ConditionDropout | None = None,
        sampler: DDIMSampler | None = None,
        long_video: LongVideo | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_decay: LrDecay = "none",
        ema_decay: float | None = 0.9999,
        ema_warmup: bool = True,
        seed: int = 0,
        val_sample_batches: int = 1,
        init_weights: str | None = None,
        init_weights_strict: bool = False,
        lora: LoRA | None = None,
        local_image_training: LocalImageSource = "first_frame",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["denoiser", "encoders", "objective", "dropout", "sampler", "long_video", "lora"]
        )
        self.denoiser = denoiser
        self.encoders = encoders
        self.encoders.requires_grad_(False)  # frozen: the one place (STYLE §11)
        self.denoiser.set_empty_text(self.encoders.empty_text)
        self.objective = objective or DiffusionObjective()
        self.dropout = dropout or ConditionDropout()
        self.sampler = sampler or DDIMSampler()
        _check_knobs(self.dropout, self.denoiser.conditions, self.objective.untrained(self.sampler.timesteps))
        self.long_video = long_video or LongVideo()
        self.lora = lora
        if lora is not None:
            if init_weights is None:
                raise ValueError("model.lora trains adapters on a pretrained base: set --model.init_weights")
            lora.apply(self.denoiser)
        self._pending_init, self._restored = init_weights, None
        self.ema = EMA(self.denoiser, ema_decay, ema_warmup) if ema_decay is not None else None

    def ema_weights(self) -> AbstractContextManager:
        """``with module.ema_weights():`` the EMA weights are in the denoiser (no-op without EMA)."""
        return self.ema.swapped_in(self.denoiser) if self.ema is not None else nullcontext()

    def conditions(self, batch: VideoBatch, training: bool) -> tuple[Tensor | None, Conditions]:
        """(clean latents or None, the full undropped conditions) of a batch."""
        uses, source = self.denoiser.conditions, self.hparams.local_image_training
        return build_conditions(batch, self.encoders, uses, training, source)

    # ---- training -----------------------------------------------------------------------
    def training_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        latents, cond = self.conditions(batch, training=True)
        cond = cond.with_drop(self.dropout.sample(latents.shape[0], device=latents.device))
        t, noise, first = self.objective.draw(latents)
        out = self.objective(self.denoiser, latents, cond, t, noise, first)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"non-finite training loss {out.loss.item()} at step {self.global_step}")
        b = latents.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b)
        self._log_buckets("train", out.loss_per_sample, t, b)
        return out.loss

    def _log_buckets(self, stage: str, per_sample: Tensor, t: Tensor, batch_size: int) -> None:
        width = self.objective.num_train_timesteps // TIMESTEP_BUCKETS
        bucket, sync = (t // width).clamp(max=TIMESTEP_BUCKETS - 1), stage != "train"
        for k in range(TIMESTEP_BUCKETS):
            mask = bucket == k
            if mask.any():
                name = f"{stage}/loss_t{k * width:03d}-{(k + 1) * width - 1:03d}"
                self.log(name, per_sample[mask].mean(), batch_size=int(mask.sum()), sync_dist=sync)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: callbacks (ModelCheckpoint) run that hook first, so a
        # checkpoint would miss the step's EMA update and a resumed run would diverge.
        if self.ema is not None:
            self.ema.update(self.denoiser)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "skip_counts") and (self.global_step % self.trainer.log_every_n_steps == 0):
            # Samples the data stream skipped (too short, corrupt, ...), cumulative.
            for reason, count in datamodule.skip_counts().items():
                self.log(f"data/skipped_{reason}", float(count), batch_size=1)

    # ---- validation: fixed noise, EMA weights -----------------------------------------
    def validation_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        with self.ema_weights():
            latents, cond = self.conditions(batch, training=True)
            # Same timesteps and noise for a given batch index at every validation: comparable curves.
            generator = torch.Generator(device=latents.device).manual_seed(
                self.hparams.seed * 100_003 + batch_idx
            )
            t, noise, first = self.objective.draw(latents, generator)
            out = self.objective(self.denoiser, latents, cond, t, noise, first, generator)
            b = latents.shape[0]
            self.log("val/loss", out.loss, prog_bar=True, batch_size=b, sync_dist=True)
            self._log_buckets("val", out.loss_per_sample, t, b)
            if batch_idx < self.hparams.val_sample_batches and batch.video is not None:
                # The cheap metrics of SPEC §6 on fully sampled clips.
                generated = to_unit(self.generate(batch, seed=self.hparams.seed + batch_idx))
                flat = [x.transpose(1, 2).flatten(0, 1) for x in (generated, to_unit(batch.video))]
                for name in ("l1", "psnr", "ssim"):
                    value = getattr(frame_metrics, name)(*flat).mean()
                    self.log(f"val/{name}", value, batch_size=b, sync_dist=True)
        return out.loss

    # ---- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: VideoBatch, seed: int | None = None, progress: bool = False) -> Tensor:
        """Animate a batch: b 3 N H W video in [-1, 1] for the N poses of ``batch.pose``.

        Uses EMA weights when present. Clips longer than one segment are made segment by segment
        (``long_video``).
        """
        _, cond = self.conditions(batch, training=False)
        height, width = batch.size
        factor = self.encoders.downsample_factor
        generator = torch.Generator(device=self.device).manual_seed(
            self.hparams.seed if seed is None else seed
        )
        with self.ema_weights():
            latents = generate_long_video(
                self.denoiser,
                cond,
                batch.num_frames,
                self.sampler,
                (len(batch), 4, height // factor, width // factor),
                generator,
                self.long_video,
                progress=progress,
            )
        return self.encoders.decode_video(latents)

    def _apply_init_weights(self) -> None:
        # Once per process. A restored checkpoint wins, except for the LoRA base it does not hold.
        path, self._pending_init = self._pending_init, None
        resumed = self.trainer.ckpt_path or self._restored  # _restored: load_from_checkpoint
        if path is None or (resumed and self.lora is None):
            if path is not None and self.trainer.is_global_zero:
                print(f"the restored checkpoint ({resumed}) wins: --model.init_weights {path} not applied")
            return
        report = load_init_weights(self.denoiser, path, self.hparams.init_weights_strict)
        if self.trainer.is_global_zero:
            print(report.table())
        if self.ema is not None and not resumed:
            self.ema = EMA(self.denoiser, self.hparams.ema_decay, self.hparams.ema_warmup)

    def on_fit_start(self) -> None:
        self._apply_init_weights()

    on_validation_start = on_test_start = on_predict_start = on_fit_start  # fit applies first; then a no-op

    def test_step(self, batch: VideoBatch, batch_idx: int) -> Tensor:
        """The generated video (b 3 f H W in [-1, 1]); ``VideoEvaluation`` measures it."""
        return self.generate(batch, seed=self.hparams.seed + batch_idx)

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> dict[str, Any]:
        return {
            "generated": self.generate(batch, seed=self.hparams.seed + batch_idx, progress=True),
            "batch": batch,
        }

    def on_fit_end(self) -> None:
        rewrite_stale_last_checkpoint(self.trainer)
        # SPEC §3: the EMA weights leave training as safetensors beside the checkpoints.
        if self.ema is None:
            return
        # trainer.log_dir is a collective (a broadcast): every rank asks, rank 0 writes.
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "ema.safetensors"
        if self.trainer.is_global_zero:
            print(f"wrote {self.ema.export(out, {'global_step': str(self.global_step)})}")
            if self.lora is not None:  # the adapters alone (above) and the merged denoiser
                with self.ema_weights():
                    print(f"wrote {save_merged(self.denoiser, out.with_name('denoiser_merged.safetensors'))}")

    # ---- optimisation and checkpoints -------------------------------------------------
    def setup(self, stage: str) -> None:
        # The EMA is a full float32 copy of the trainable weights on every rank: it needs unsharded
        # parameters (DDP, DeepSpeed ZeRO-1/2), not FSDP or ZeRO-3 (docs/scale_out.md).
        strategy = self.trainer.strategy
        sharded = type(strategy).__name__ == "FSDPStrategy" or getattr(strategy, "zero_stage_3", False)
        if self.ema is not None and sharded:
            raise ValueError(
                f"EMA (ema_decay={self.hparams.ema_decay}) needs full parameters on every rank; "
                f"{type(strategy).__name__} shards them. Set --model.ema_decay=null or use DDP / ZeRO-2."
            )

    def configure_optimizers(self):
        groups = parameter_groups(self.denoiser, self.hparams.weight_decay)
        # Fused on CPU: one kernel instead of a loop over tensors (the demo's AdamW: 10.4 -> 2.8 ms a step).
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr, fused=self.device.type == "cpu" or None)
        factor = lr_factor(self.hparams.warmup_steps, self.hparams.lr_decay, self.trainer.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen encoders come from their own folders: keep them out of every checkpoint.
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoders.")
        }
        if self.lora is not None:  # the base is init_weights: keep only the adapters
            checkpoint["state_dict"] = lora_state_dict(checkpoint["state_dict"])
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put the current encoder (and LoRA base) weights back so the strict load sees every key.
        current = self.state_dict() if self.lora is not None else self.encoders.state_dict(prefix="encoders.")
        for key, value in current.items():
            checkpoint["state_dict"].setdefault(key, value)
        self._restored = f"step {checkpoint.get('global_step')}"
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])


def _check_knobs(dropout: ConditionDropout, uses: frozenset[str], untrained: list[int] | None = None) -> None:
    """No knob that silently does nothing, one warning line each: a dropout probability set (above 0,
    not its default) for a condition the denoiser lacks; sampler timesteps never trained at."""
    if untrained:
        rank_zero_warn(f"sampler timesteps {untrained} are not in model.objective.timesteps", stacklevel=2)
    defaults = {f.name: f.default for f in fields(ConditionDropout)}
    for name, field_name in DROPPED_FIELD.items():
        p = getattr(dropout, f"p_{name}")
        if field_name not in uses and p > 0 and p != defaults[f"p_{name}"]:
            rank_zero_warn(
                f"dropout.p_{name}={p} has no effect: this denoiser does not use {field_name}", stacklevel=2
            )
