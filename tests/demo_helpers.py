"""Helpers for tests that run the CLI on the demo config (imported as ``demo_helpers``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def demo_overrides(root: Path, run_dir: Path, max_steps: int = 4, frames: int = 4) -> list[str]:
    """CLI arguments that point the demo config at the session's data and a tiny, short run."""
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        f"--trainer.max_steps={max_steps}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--model.encoders.init_args.clip_path={root / 'tiny_clip'}",
        f"--model.encoders.init_args.vae_path={root / 'tiny_vae'}",
        "--model.sampler.init_args.num_steps=2",
        f"--model.long_video.segment_frames={frames}",
        f"--data.init_args.train_shards={root / 'synthetic' / 'train'}",
        f"--data.init_args.val_shards={root / 'synthetic' / 'val'}",
        "--data.init_args.synthetic_root=null",
        f"--data.init_args.latent_cache_dir={root / 'latents'}",
        f"--data.init_args.num_frames={frames}",
        f"--data.init_args.val_num_frames={frames}",
        "--data.init_args.batch_size=2",
        f"--data.init_args.test_num_frames={frames}",
        f"--evaluation.protocol.frames_per_clip={frames}",
        f"--evaluation.random_metric_weights={root / 'metric_weights'}",
        "--evaluation.pose_swap.identities=[20000]",
        f"--evaluation.pose_swap.num_frames={frames}",
    ]
