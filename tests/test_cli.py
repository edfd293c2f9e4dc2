"""The `unianimate` CLI end to end on the demo config (tiny sizes, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from demo_helpers import REPO, demo_overrides

from unianimate.cli import main

pytestmark = pytest.mark.slow


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def fitted(demo_root, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fit")
    main(["fit", *demo_overrides(demo_root, run_dir, max_steps=4)])
    return run_dir


def test_fit_saves_config_checkpoint_and_a_playable_video(fitted):
    version = fitted / "version_0"
    config = (version / "config.yaml").read_text()
    assert "max_steps: 4" in config and "class_path: unianimate.models.unianimate.UniAnimate" in config
    ckpt = torch.load(version / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert "ema" in ckpt and ckpt["ema"]["num_updates"] == 4
    assert not any(k.startswith("encoders.") for k in ckpt["state_dict"])  # frozen parts stay out
    video = version / "samples" / "final.mp4"
    assert _frames(video) == 4  # reference | pose | generated | ground truth, 4 frames
    assert list((version).glob("events.out.tfevents.*"))
    # The EMA leaves training as safetensors that load strictly into a fresh denoiser.
    import yaml
    from safetensors.torch import load_file

    from unianimate.models.unet3d import UNet3D
    from unianimate.models.unianimate import UniAnimate

    ema = load_file(version / "ema.safetensors")
    assert torch.equal(ema["unet.conv_in.weight"], ckpt["ema"]["shadow"]["unet.conv_in.weight"])
    init = yaml.safe_load((REPO / "configs" / "model" / "tiny.yaml").read_text())["init_args"]
    UniAnimate(UNet3D(**init.pop("unet")["init_args"]), **init).load_state_dict(ema, strict=True)


def test_predict_writes_held_out_videos(fitted, demo_root):
    ckpt = fitted / "version_0" / "checkpoints" / "last.ckpt"
    out = fitted / "pred"
    main(
        [
            "predict",
            *demo_overrides(demo_root, out),
            "--trainer.limit_predict_batches=1",
            f"--ckpt_path={ckpt}",
        ]
    )
    videos = sorted((out / "predict").glob("*_compare.mp4"))
    assert len(videos) == 2 and all(_frames(v) == 4 for v in videos)


def test_predict_animates_a_reference_with_a_long_pose_file(fitted, demo_root, tmp_path):
    """A 10-frame pose sequence with 4-frame segments: chain mode must give all 10 frames."""
    from PIL import Image

    from datamodules.synthetic import make_synthetic_video

    frames, pose = make_synthetic_video(identity=3, num_frames=10, height=64, width=48, seed=7)
    Image.fromarray(frames[0]).save(tmp_path / "ref.png")
    (tmp_path / "pose.npz").write_bytes(pose.to_npz_bytes())
    out = tmp_path / "run"
    args = [
        "predict",
        *demo_overrides(demo_root, out),
        "--config",
        str(REPO / "configs" / "animate.yaml"),
        f"--data.init_args.reference={tmp_path / 'ref.png'}",
        f"--data.init_args.driving={tmp_path / 'pose.npz'}",
        f"--ckpt_path={fitted / 'version_0' / 'checkpoints' / 'last.ckpt'}",
    ]
    main(args)
    assert _frames(out / "predict" / "pose.mp4") == 10


def test_test_command_writes_the_metric_table(fitted, demo_root):
    out = fitted / "test"
    ckpt = fitted / "version_0" / "checkpoints" / "last.ckpt"
    main(["test", *demo_overrides(demo_root, out), "--trainer.limit_test_batches=1", f"--ckpt_path={ckpt}"])
    (results_path,) = list(out.glob("**/test_metrics.json"))
    results = json.loads(results_path.read_text())
    for key in ("l1", "psnr", "ssim", "lpips", "fvd"):
        assert key in results
    assert np.isfinite(results["l1"]) and 0 <= results["ssim"] <= 1
    assert results["weights"].startswith("random")  # clearly labelled
    table = (results_path.parent / "test_metrics.md").read_text()
    assert "| psnr" in table.lower()
    # Two baselines beside the model, same clips, same protocol: the floor and the ceiling.
    for row in ("| model |", "| copy reference |", "| autoencoder reconstruction of the ground truth |"):
        assert row in table
    assert set(results["baselines"]) == {"copy_reference", "autoencoder"}
    assert all(np.isfinite(b["psnr"]) for b in results["baselines"].values())
    # Pose-following rows on synthetic figures with exact ground truth (evaluation.pose_swap).
    pose = results["pose_following"]
    assert "| pose-following |" in table and "figure IoU" in table and "to the autoencoder (100 %)" in table
    assert set(pose) == {"model", "copy reference", "autoencoder reconstruction of the ground truth"}
    assert pose["copy reference"]["swap_margin"] == pytest.approx(0.0, abs=1e-9)
    assert all(np.isfinite(list(row.values())).all() for row in pose.values())
