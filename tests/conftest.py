"""Shared fixtures: one small synthetic dataset and tiny encoders per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton kernels run in Triton's interpreter on CPU; it must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small synthetic shard set (train/val) and tiny CLIP + VAE folders, made once."""
    from datamodules.synthetic import ensure_synthetic_dataset
    from unianimate.models.frozen import make_tiny_clip, make_tiny_vae

    root = tmp_path_factory.mktemp("demo")
    ensure_synthetic_dataset(
        root / "synthetic", num_train=8, num_val=4, num_train_identities=4, num_frames=12
    )
    make_tiny_clip(root / "tiny_clip")
    make_tiny_vae(root / "tiny_vae")
    return root


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
        f"--model.segment_frames={frames}",
        f"--data.init_args.train_shards={root / 'synthetic' / 'train'}",
        f"--data.init_args.val_shards={root / 'synthetic' / 'val'}",
        "--data.init_args.synthetic_root=null",
        f"--data.init_args.num_frames={frames}",
        "--data.init_args.batch_size=2",
        f"--data.init_args.test_num_frames={frames}",
        f"--model.eval_protocol.frames_per_clip={frames}",
        f"--model.random_metric_weights={root / 'metric_weights'}",
    ]
