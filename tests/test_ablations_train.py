"""The model-changing ablations do train and sample (tiny sizes, two steps each)."""

from __future__ import annotations

import pytest
import torch
from demo_helpers import demo_overrides

from unianimate.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "override",
    [
        "--model.denoiser.reference_guidance=false",
        "--model.denoiser.reference_pose=false",
        "--model.denoiser.unet.temporal=mamba",
    ],
)
def test_ablation_fits_and_samples(demo_root, tmp_path, override):
    main(["fit", *demo_overrides(demo_root, tmp_path, max_steps=2), override])
    ckpt = torch.load(
        tmp_path / "version_0" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert ckpt["global_step"] == 2
    assert (tmp_path / "version_0" / "samples" / "final.mp4").stat().st_size > 0
    names = set(ckpt["state_dict"])
    if "reference_guidance" in override:
        assert not any("ref_latent_encoder" in k for k in names)
    if "reference_pose" in override:
        assert any("ref_latent_encoder" in k for k in names) and not any(
            "ref_pose_encoder" in k for k in names
        )
