"""The LightningModule: frozen encoders + the UniAnimate denoiser + the SPEC §3 objective + EMA."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from unianimate.conditions import Conditions
from unianimate.diffusion.condition_dropout import ConditionDropout
from unianimate.diffusion.long_video import generate_long_video
from unianimate.diffusion.objective import DiffusionObjective
from unianimate.diffusion.sampling import DDIMSampler
from unianimate.ema import EMA
from unianimate.metrics import frame_metrics
from unianimate.metrics.baselines import BaselineMetrics, format_rows
from unianimate.metrics.protocol import EvalProtocol, VideoMetrics, write_json
from unianimate.models.frozen import FrozenEncoders
from unianimate.models.unianimate import UniAnimate

# Loss is also logged per timestep bucket: where in the schedule the model is still bad.
TIMESTEP_BUCKETS = 4


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


class UniAnimateModule(L.LightningModule):
    """Trains ``model`` (the denoiser) on video + pose batches.

    Args:
        model: the UniAnimate denoiser (plain PyTorch).
        encoders: frozen CLIP + VAE, from local folders.
        objective: the diffusion objective (unified noise input).
        dropout: per-sample condition dropout.
        sampler: DDIM sampler for validation videos and ``predict``.
        lr, weight_decay, warmup_steps: AdamW with linear warm-up.
        ema_decay: EMA of the trainable weights (``None`` turns it off).
        ema_warmup: use the (1 + n) / (10 + n) warm-up of the decay.
        long_video_mode, segment_frames, overlap: how ``predict`` makes clips longer than one segment.
        seed: base seed of the fixed validation noise and of sampling.
        val_sample_batches: validation batches that are also fully sampled, for L1 / PSNR / SSIM
            of generated against ground-truth frames (0: loss only).
        eval_protocol: what ``unianimate test`` measures (SPEC §6).
        random_metric_weights: a folder; LPIPS / I3D weights the protocol does not name are
            generated there with random weights (demo only: the results say so).
        pose_fidelity: ``unianimate test`` also re-extracts poses from the generated frames with
            this pose backend (``mediapipe``: the ``pose`` extra) and reports PCK@0.05 of the image
            diagonal against the driving keypoints (``None``: off).
    """

    def __init__(
        self,
        model: UniAnimate,
        encoders: FrozenEncoders,
        objective: DiffusionObjective | None = None,
        dropout: ConditionDropout | None = None,
        sampler: DDIMSampler | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float | None = 0.9999,
        ema_warmup: bool = True,
        long_video_mode: str = "chain",
        segment_frames: int = 16,
        overlap: int = 8,
        seed: int = 0,
        val_sample_batches: int = 1,
        eval_protocol: EvalProtocol | None = None,
        random_metric_weights: str | None = None,
        pose_fidelity: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["model", "encoders", "objective", "dropout", "sampler", "eval_protocol"]
        )
        self.model = model
        self.encoders = encoders
        self.encoders.requires_grad_(False)  # frozen: the one place (STYLE §11)
        self.model.set_empty_text(self.encoders.empty_text)
        self.objective = objective or DiffusionObjective()
        self.dropout = dropout or ConditionDropout()
        self.sampler = sampler or DDIMSampler()
        self.ema = EMA(self.model, ema_decay, ema_warmup) if ema_decay is not None else None
        self.eval_protocol = eval_protocol or EvalProtocol()
        self.metrics: VideoMetrics | None = None

    # ---- conditions ---------------------------------------------------------------------
    @torch.no_grad()
    def encode_batch(self, batch: dict[str, Any]) -> tuple[Tensor, Conditions]:
        """A data batch -> clean latents b 4 f h w and the full (undropped) conditions."""
        if "latent" in batch:  # latent-cache shards: the encoders already ran offline
            latents, ref_latent, clip = batch["latent"], batch["ref_latent"], batch["clip_embed"]
        else:
            latents = self.encoders.encode_video(batch["video"])
            ref_latent = self.encoders.encode_images(batch["ref_image"])
            clip = self.encoders.encode_clip(batch["ref_image"])
        first_frame = None
        if self.model.first_frame_encoder is not None:
            if "video" not in batch:
                raise ValueError(
                    "the pixel first-frame stream needs decoded video frames; it cannot train from latent-cache shards"
                )
            first_frame = to_unit(batch["video"][:, :, 0])
        guided = self.model.ref_latent_encoder is not None  # reference_guidance=False: none to give
        cond = Conditions(
            pose=batch["pose"],
            ref_pose=batch["ref_pose"] if guided else None,
            ref_latent=ref_latent if guided else None,
            clip_embed=clip,
            first_frame=first_frame,
        )
        return latents, cond

    # ---- training -----------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        latents, cond = self.encode_batch(batch)
        cond = cond.with_drop(self.dropout.sample(latents.shape[0], device=latents.device))
        t, noise, first = self.objective.draw(latents)
        out = self.objective(self.model, latents, cond, t, noise, first)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"non-finite training loss {out.loss.item()} at step {self.global_step}")
        b = latents.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=b)
        self._log_buckets("train", out.loss_per_sample, t, b)
        return out.loss

    def _log_buckets(self, stage: str, per_sample: Tensor, t: Tensor, batch_size: int) -> None:
        width = self.objective.num_train_timesteps // TIMESTEP_BUCKETS
        bucket = (t // width).clamp(max=TIMESTEP_BUCKETS - 1)
        for k in range(TIMESTEP_BUCKETS):
            mask = bucket == k
            if mask.any():
                name = f"{stage}/loss_t{k * width:03d}-{(k + 1) * width - 1:03d}"
                self.log(
                    name, per_sample[mask].mean(), batch_size=int(mask.sum()), sync_dist=stage != "train"
                )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: callbacks (ModelCheckpoint) run that hook first, so a
        # checkpoint would miss the step's EMA update and a resumed run would diverge.
        if self.ema is not None:
            self.ema.update(self.model)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "skip_counts") and (self.global_step % self.trainer.log_every_n_steps == 0):
            # Samples the data stream skipped (too short, corrupt, ...), cumulative.
            for reason, count in datamodule.skip_counts().items():
                self.log(f"data/skipped_{reason}", float(count), batch_size=1)

    # ---- validation: fixed noise, EMA weights -----------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._ema_context = self.ema.swapped_in(self.model) if self.ema is not None else nullcontext()
        self._ema_context.__enter__()

    def on_validation_epoch_end(self) -> None:
        self._ema_context.__exit__(None, None, None)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        latents, cond = self.encode_batch(batch)
        # Same timesteps and noise for a given batch index at every validation: comparable curves.
        generator = torch.Generator(device=latents.device).manual_seed(
            self.hparams.seed * 100_003 + batch_idx
        )
        t, noise, first = self.objective.draw(latents, generator)
        out = self.objective(self.model, latents, cond, t, noise, first, generator)
        b = latents.shape[0]
        self.log("val/loss", out.loss, prog_bar=True, batch_size=b, sync_dist=True)
        self._log_buckets("val", out.loss_per_sample, t, b)
        if batch_idx < self.hparams.val_sample_batches and "video" in batch:
            # The cheap metrics of SPEC §6 on fully sampled clips (EMA weights are swapped in).
            generated, target = (
                to_unit(self.generate(batch, seed=self.hparams.seed + batch_idx)),
                to_unit(batch["video"]),
            )
            flat = [x.transpose(1, 2).flatten(0, 1) for x in (generated, target)]  # (b f) 3 H W
            for name, fn in (
                ("l1", frame_metrics.l1),
                ("psnr", frame_metrics.psnr),
                ("ssim", frame_metrics.ssim),
            ):
                self.log(f"val/{name}", fn(*flat).mean(), batch_size=b, sync_dist=True)
        return out.loss

    # ---- test: the paper's metrics on held-out videos -------------------------------
    def on_test_start(self) -> None:
        protocol = self.eval_protocol
        if self.hparams.random_metric_weights is not None and (
            protocol.lpips_vgg is None or protocol.i3d is None
        ):
            from dataclasses import replace

            from unianimate.metrics.random_weights import make_tiny_metric_weights

            folder = self.hparams.random_metric_weights
            paths = {k: str(v) for k, v in make_tiny_metric_weights(folder).items()}
            protocol = replace(
                protocol,
                lpips_vgg=protocol.lpips_vgg or paths["lpips_vgg"],
                lpips_heads=protocol.lpips_heads or paths["lpips_heads"],
                i3d=protocol.i3d or paths["i3d"],
            )
        self.metrics = VideoMetrics(protocol, device=self.device)
        self.baselines = BaselineMetrics(self.metrics)  # copy reference, autoencoder reconstruction
        self.pck_values: list[float] = []
        self.pose_extractor = None
        if self.hparams.pose_fidelity is not None:
            from datamodules.pose_extract import make_extractor  # the pose extra, only when asked

            self.pose_extractor = make_extractor(self.hparams.pose_fidelity)
        self._ema_context = self.ema.swapped_in(self.model) if self.ema is not None else nullcontext()
        self._ema_context.__enter__()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        generated = self.generate(batch, seed=self.hparams.seed + batch_idx)
        self.metrics.update(to_unit(generated).clamp(0, 1), to_unit(batch["video"]).clamp(0, 1))
        self.baselines.update(batch, self.encoders, seed=self.hparams.seed + batch_idx)
        if self.pose_extractor is not None:
            self.pck_values += self._pose_fidelity(generated, batch["keypoints"])

    def _pose_fidelity(self, generated: Tensor, keypoints: Tensor) -> list[float]:
        """PCK per video: poses re-extracted from ``generated`` (b 3 f H W) vs the driving
        ``keypoints`` (b f 20 3, normalised to the clip's frame)."""
        from unianimate.metrics.pck import pck
        from unianimate.visualize import to_uint8_frames

        height, width = generated.shape[-2:]
        scale = np.array([width, height, 1.0])
        values = []
        for video, target in zip(generated, keypoints.cpu().numpy()):
            found = self.pose_extractor(to_uint8_frames(video)).body
            values.append(pck(found * scale, target * scale, image_size=(height, width)))
        return values

    def on_test_epoch_end(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each rank evaluated its own shards: gather everything, so every rank computes the
            # metrics of all the videos (FVD needs all the features together, not a mean of FVDs).
            gathered = [None] * torch.distributed.get_world_size()
            snapshot = (self.metrics.snapshot(), self.pck_values, self.baselines.snapshot())
            torch.distributed.all_gather_object(gathered, snapshot)
            self.metrics.merge([snap for snap, _, _ in gathered])
            self.pck_values = [v for _, values, _ in gathered for v in values]
            self.baselines.merge([snap for _, _, snap in gathered])
        results = self.metrics.compute()
        baselines = self.baselines.compute()
        if self.pose_extractor is not None:
            # Videos where no keypoint was found in both count as NaN and are left out of the mean.
            found = [v for v in self.pck_values if v == v]
            results["pck"] = float(np.mean(found)) if found else float("nan")
            results["pck_videos"] = len(found)
        for name, value in results.items():
            if isinstance(value, float | int):  # the same on every rank: nothing to reduce
                self.log(f"test/{name}", float(value), sync_dist=False, rank_zero_only=True)
        for baseline, values in baselines.items():
            for name in ("l1", "psnr", "ssim"):
                self.log(f"test_{baseline}/{name}", float(values[name]), sync_dist=False, rank_zero_only=True)
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # collective: every rank
        if not self.trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json({**results, "baselines": baselines}, out_dir / "test_metrics.json")
        table = format_rows(results, baselines)
        (out_dir / "test_metrics.md").write_text(table + "\n")
        print(f"\n{table}\nwrote {out_dir / 'test_metrics.json'} and {out_dir / 'test_metrics.md'}")

    def on_test_end(self) -> None:
        self._ema_context.__exit__(None, None, None)

    # ---- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict[str, Any], seed: int | None = None, progress: bool = False) -> Tensor:
        """Animate a batch: b 3 N H W video in [-1, 1] for the N poses of ``batch["pose"]``.

        Uses EMA weights when present. Clips longer than one segment are made segment by segment
        (``long_video_mode``: chain or window).
        """
        cond = self.encode_reference(batch)
        num_frames = batch["pose"].shape[2]
        b, _, _, height, width = batch["pose"].shape
        factor = self.encoders.downsample_factor
        h, w = height // factor, width // factor
        generator = torch.Generator(device=self.device).manual_seed(
            self.hparams.seed if seed is None else seed
        )
        context = self.ema.swapped_in(self.model) if self.ema is not None else nullcontext()
        with context:
            latents = generate_long_video(
                self.model,
                cond,
                num_frames,
                self.sampler,
                (b, 4, h, w),
                generator,
                mode=self.hparams.long_video_mode,
                segment_frames=min(self.hparams.segment_frames, num_frames),
                overlap=self.hparams.overlap,
                progress=progress,
            )
        return self.encoders.decode_video(latents)

    @torch.no_grad()
    def encode_reference(self, batch: dict[str, Any]) -> Conditions:
        """Conditions from the reference image and poses only (no ground-truth video needed)."""
        ref = batch["ref_image"]
        guided = self.model.ref_latent_encoder is not None
        cond = Conditions(
            pose=batch["pose"],
            ref_pose=batch["ref_pose"] if guided else None,
            ref_latent=self.encoders.encode_images(ref) if guided else None,
            clip_embed=self.encoders.encode_clip(ref),
            # The release feeds the reference image as the pixel first-frame stream at inference.
            first_frame=to_unit(ref) if self.model.first_frame_encoder is not None else None,
        )
        return cond

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {
            "generated": self.generate(batch, seed=self.hparams.seed + batch_idx, progress=True),
            "batch": batch,
        }

    def on_fit_end(self) -> None:
        # SPEC §3: the EMA weights leave training as safetensors beside the checkpoints.
        if self.ema is None:
            return
        # trainer.log_dir is a collective (a broadcast): every rank asks, rank 0 writes.
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "ema.safetensors"
        if self.trainer.is_global_zero:
            print(f"wrote {self.ema.export(out, {'global_step': str(self.global_step)})}")

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
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup = max(self.hparams.warmup_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen encoders come from their own folders: keep them out of every checkpoint.
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoders.")
        }
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put the current encoder weights back so the strict state-dict load sees every key.
        for key, value in self.encoders.state_dict(prefix="encoders.").items():
            checkpoint["state_dict"].setdefault(key, value)
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
