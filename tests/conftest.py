"""Shared fixtures: one small synthetic dataset and tiny encoders per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton kernels run in Triton's interpreter on CPU; it must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
