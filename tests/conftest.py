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


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module's tests. For tiny inputs on a busy 2-core machine the
    thread hand-offs cost more than the arithmetic (I3D on 16x16 clips: 0.05 s single-threaded vs
    seconds with two spinning threads). Use with ``pytest.mark.usefixtures("single_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
