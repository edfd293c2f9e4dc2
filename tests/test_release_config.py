"""``configs/release.yaml``: the release's inference settings, and ``unianimate predict`` with
``--model.init_weights`` run end to end on CPU with the tiny official fixture model and tiny encoders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
import yaml
from demo_helpers import REPO
from safetensors.torch import load_file

from unianimate import cli

CONFIGS = REPO / "configs"
FIXTURES = REPO.parent / "shared" / "fixtures" / "official_unianimate"


def test_release_settings(monkeypatch):
    monkeypatch.setattr(cli.UniAnimateCLI, "instantiate_classes", lambda self: None)
    config = cli.main(
        args=[
            "--config",
            str(CONFIGS / "release.yaml"),
            "--data.init_args.reference=me.jpg",
            "--data.init_args.driving=d.npz",
        ],
        run=False,
    ).config
    model, data = config.model, config.data.init_args
    assert (data.height, data.width, data.resize, data.pose_backend) == (768, 512, "stretch", "dwpose")
    assert data.frame_interval == 2
    sampler = model.sampler.init_args
    assert (sampler.num_steps, sampler.spacing, sampler.guidance_scale, sampler.noise_prior_t) == (
        30,
        "release",
        2.5,
        949,
    )
    from unianimate.diffusion.sampling import DDIMSampler

    steps = DDIMSampler(sampler.num_steps, sampler.spacing).timesteps
    assert steps == list(range(991, 0, -33)) and len(steps) == 31 and steps[-2:] == [34, 1]
    assert (model.long_video.mode, model.long_video.segment_frames, model.long_video.overlap) == (
        "window",
        32,
        8,
    )
    denoiser = model.denoiser.init_args
    assert denoiser.local_image_stream and denoiser.reference_guidance and denoiser.clip_tokens
    assert model.init_weights.endswith("unianimate_16f_32f_non_ema_223000.pth")
    assert (
        model.encoders.init_args.clip_path == "weights/clip-vit-h-14"
        and model.encoders.init_args.vae_path == "weights/sd21-vae"
    )


def test_print_config_shows_init_weights(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "unianimate.cli",
            "predict",
            "--config",
            str(CONFIGS / "release.yaml"),
            "--print_config",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "init_weights: weights/unianimate_16f_32f_non_ema_223000.pth" in result.stdout


def _tiny_clip_64(path: Path) -> None:
    """A tiny CLIP whose text width and projection are 64: the tiny fixture's context and image width."""
    from unianimate.models.frozen import make_tiny_clip

    make_tiny_clip(path, projection_dim=64, text_width=64)


def _tiny_fixture_denoiser(path: Path) -> Path:
    """The tiny official fixture's architecture as a denoiser config (fixture README §3)."""
    args = json.loads((FIXTURES / "tiny_config.json").read_text())["constructor"]
    unet = dict(
        in_channels=12,
        out_channels=4,
        base_channels=args["dim"],
        channel_mult=args["dim_mult"],
        num_res_blocks=args["num_res_blocks"],
        attention_levels=[],
        head_dim=args["head_dim"],
        context_dim=args["context_dim"],
        temporal_in_heads=args["num_heads"],
        dropout=args["dropout"],
    )
    config = {
        "class_path": "unianimate.models.unianimate.UniAnimate",
        "init_args": {
            "unet": {"class_path": "unianimate.models.unet3d.UNet3D", "init_args": unet},
            "context_dim": args["context_dim"],
            "clip_dim": args["context_dim"],
            "num_clip_tokens": args["num_tokens"],
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_release_pipeline_end_to_end_with_the_tiny_fixture(demo_root, tmp_path, capsys):
    from PIL import Image

    from datamodules.synthetic import make_synthetic_video

    release_pth = tmp_path / "unianimate_tiny_release.pth"
    torch.save(
        {k: v.float() for k, v in load_file(FIXTURES / "tiny_state_dict.safetensors").items()}, release_pth
    )
    _tiny_clip_64(tmp_path / "clip")
    frames, pose = make_synthetic_video(identity=1, num_frames=6, height=64, width=48, seed=3)
    Image.fromarray(frames[0]).save(tmp_path / "me.png")
    (tmp_path / "dance.npz").write_bytes(pose.to_npz_bytes())
    out = tmp_path / "out"
    cli.main(
        [
            "predict",
            "--config",
            str(CONFIGS / "release.yaml"),
            f"--model.init_weights={release_pth}",
            "--model.init_weights_strict=true",  # every one of the release's keys loads, none is new
            f"--data.reference={tmp_path / 'me.png'}",
            f"--data.driving={tmp_path / 'dance.npz'}",
            # Tiny sizes: the fixture's architecture and encoders, 64x48 pixels, 4-frame windows.
            f"--model.denoiser={_tiny_fixture_denoiser(tmp_path / 'tiny_release.yaml')}",
            f"--model.encoders.clip_path={tmp_path / 'clip'}",
            f"--model.encoders.vae_path={demo_root / 'tiny_vae'}",
            "--model.long_video.segment_frames=4",
            "--model.long_video.overlap=2",
            "--data.height=64",
            "--data.width=48",
            "--data.frame_interval=1",
            f"--trainer.default_root_dir={out}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
        ]
    )
    table = capsys.readouterr().out
    assert "official UniAnimate / VGen key names" in table and "total (tensors)" in table
    assert table.split("total (tensors)")[1].split()[:3] == ["374", "0", "0"]
    (video,) = (out / "predict").glob("dance.mp4")
    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (64, 48, 3)
