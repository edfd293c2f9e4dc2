"""tools/study.py: the drift measures on hand-made videos, and the whole study on a tiny budget."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from demo_helpers import REPO

from datamodules.synthetic import draw_background, figure_mask, identity_appearance, make_synthetic_video
from unianimate.diffusion.long_video import LongVideo
from unianimate.errors import InputError
from unianimate.metrics import drift
from unianimate.metrics.protocol import RANDOM_WEIGHTS

sys.path.insert(0, str(REPO / "tools"))
import study  # noqa: E402


@pytest.mark.parametrize(
    "mode, parts",
    [
        ("chain", [(0, 8), (8, 15), (15, 22), (22, 24)]),  # each next segment starts on the last frame
        ("window", [(0, 8), (8, 12), (12, 16), (16, 20), (20, 24)]),  # stride 4 with overlap 4
        ("independent", [(0, 8), (8, 16), (16, 24)]),
    ],
)
def test_new_frames_and_seams_of_each_mode(mode, parts):
    spans = LongVideo(mode, segment_frames=8, overlap=4).spans(24)
    assert drift.new_frames(spans) == parts
    assert drift.seams(spans) == [start for start, _ in parts[1:]]


def test_blocks():
    assert drift.blocks(20, 8) == [(0, 8), (8, 16), (16, 20)]


def test_seam_jump_on_a_known_video():
    # Flat grey frames: +1 per frame inside segments, +10 into each seam frame (4 and 8).
    values, seams = [0.0], [4, 8]
    for t in range(1, 12):
        values.append(values[-1] + (10.0 if t in seams else 1.0))
    video = torch.tensor(values).view(1, 1, 12, 1, 1).expand(2, 3, 12, 5, 4)
    assert drift.seam_jump(video, seams) == (10.0, 1.0)
    assert drift.frame_changes(video).shape == (2, 11)
    # Without seams there is nothing to average: NaN, not a made-up zero.
    seam, inside = drift.seam_jump(video, [])
    assert np.isnan(seam) and inside == pytest.approx(sum(np.diff(values)) / 11)


def test_figure_colour_and_distance_on_known_pixels():
    video = torch.zeros(1, 3, 2, 4, 4)
    video[:, 0, :, :2] = 1.0  # red on the top half
    video[:, 2, 1] = 0.5  # frame 1: blue everywhere
    mask = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True  # the top half is the figure
    colours = drift.figure_colour(video, mask)
    assert torch.equal(colours, torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.5]]], dtype=torch.float64))
    distance = drift.colour_distance(colours, torch.tensor([[1.0, 0.0, 0.0]]))
    assert torch.equal(distance, torch.tensor([[0.0, 0.5]], dtype=torch.float64))
    assert drift.part_means(torch.tensor([[1.0, 3.0, 5.0], [3.0, 5.0, 7.0]]), [(0, 1), (1, 3)]) == [2.0, 5.0]
    mask[:, 1] = False  # an empty mask has no colour
    assert torch.isnan(drift.figure_colour(video, mask)[0, 1]).all()


def test_figure_mask_finds_the_figure_and_nothing_else():
    identity = 20_000
    frames, pose = make_synthetic_video(identity, 3, 64, 48, seed=1)
    background = draw_background(identity_appearance(identity), 64, 48)
    assert not figure_mask(identity, background[None]).any()  # the background alone
    mask = figure_mask(identity, frames)
    assert 0.05 < mask.mean() < 0.6
    outside = ~mask
    assert (
        np.abs(frames[outside].astype(int) - np.broadcast_to(background, frames.shape)[outside]).max() <= 24
    )
    # The torso covers the point between the neck and the hips.
    body = pose.body[:, :, :2]
    centre = (body[:, 1] + (body[:, 8] + body[:, 11]) / 2) / 2
    for f, (x, y) in enumerate(centre):
        assert mask[f, int(y * 64), int(x * 48)]


def _flat(tree, prefix=""):
    """A nested config as {dotted key: value}, without the ``init_args`` levels."""
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, prefix if key == "init_args" else f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_study_runs_end_to_end_and_continues(demo_root, tmp_path):
    overrides = [
        "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1",
        f"--model.encoders.init_args.clip_path={demo_root / 'tiny_clip'}",
        f"--model.encoders.init_args.vae_path={demo_root / 'tiny_vae'}",
        "--model.sampler.init_args.num_steps=2",
        "--model.long_video.segment_frames=8",
        f"--data.init_args.train_shards={demo_root / 'synthetic' / 'train'}",
        f"--data.init_args.val_shards={demo_root / 'synthetic' / 'val'}",
        "--data.init_args.synthetic_root=null",
        f"--data.init_args.latent_cache_dir={tmp_path / 'latents'}",
        "--data.init_args.num_frames=8",
        "--data.init_args.val_num_frames=8",
        "--data.init_args.batch_size=2",
        "--data.init_args.test_num_frames=8",
        "--evaluation.protocol.frames_per_clip=8",
        f"--evaluation.random_metric_weights={demo_root / 'metric_weights'}",
        "--evaluation.pose_swap.identities=[20000]",
        "--evaluation.pose_swap.num_frames=8",
    ]
    settings = study.Settings(steps=2, test_batches=1, long_videos=2, long_frames=24, overrides=overrides)
    arms = ["full", "mamba_causal"]
    out = tmp_path / "study"
    results = study.run_study(settings, out, arms)

    assert list(results) == arms
    saved = json.loads((out / "study.json").read_text())
    assert list(saved["arms"]) == arms
    for r in results.values():
        assert r["steps"] == 2
        assert set(r["test"]) >= {"l1", "psnr", "ssim", "lpips", "fvd"} and r["test"]["num_videos"] == 2
        assert r["test"]["weights"] == RANDOM_WEIGHTS
        pose = r["test"]["pose_following"]
        assert set(pose) == {"model", "copy reference", "autoencoder reconstruction of the ground truth"}
        assert set(pose["model"]) >= {"psnr", "motion_psnr", "figure_iou", "swap_margin", "swap_margin_min"}
        lv = r["long_video"]
        assert [list(part) for part in lv["segments"]] == [[0, 8], [8, 16], [16, 24]]
        for mode in study.MODES:
            m = lv[mode]
            assert len(m["psnr"]) == 3 and len(m["psnr_per_frame"]) == 24 and len(m["colour_delta"]) == 3
            assert all(np.isfinite(m["psnr"])) and m["seam_jump"] > 0 and m["inside_change"] > 0
        assert lv["chain"]["seams"] == [8, 15, 22] and lv["independent"]["seams"] == [8, 16]
    # Every arm saw the same held-out clips: one copy-reference row.
    assert len({json.dumps(r["baselines"]) for r in results.values()}) == 1

    # The copy-reference drift curve, recomputed here from the long videos the study measured.
    lv = results["full"]["long_video"]
    batch, masks, ref_masks = study.long_video_batch(_example(out, "full"), 2, 24)
    truth, ref = (batch.video + 1) / 2, (batch.ref_image + 1) / 2
    copy = ref.unsqueeze(2).expand_as(truth)
    mse = (copy.double() - truth.double()).square().mean(dim=(1, 3, 4))  # b f
    expected = [float((10 * torch.log10(1 / mse[:, s:e])).mean()) for s, e in [(0, 8), (8, 16), (16, 24)]]
    np.testing.assert_allclose(lv["copy_reference"]["psnr"], expected, rtol=1e-6)
    assert masks.shape == (2, 24, 64, 48) and ref_masks.shape == (2, 64, 48) and masks.any()

    report = (out / "study.md").read_text()
    labels = [
        "copy reference",
        "LPIPS ↓ (random weights)",
        "motion-region PSNR",
        "figure IoU",
        "chain",
        "window",
    ]
    for label in [*arms, *labels, "independent"]:
        assert label in report
    assert (out / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A rerun with the same settings reads the finished arms back; other settings are refused.
    again = study.run_study(settings, out, arms)
    assert json.dumps(again, sort_keys=True) == json.dumps(json.loads(json.dumps(results)), sort_keys=True)
    # An arm whose results were lost resumes its last checkpoint (here: the end) and measures the same.
    (out / "arms" / "full.json").unlink()
    resumed = study.run_study(settings, out, ["full"])["full"]
    assert resumed["resumed_from"].endswith("last.ckpt") and results["full"]["resumed_from"] is None
    # Same weights and EMA, so the same videos up to float32 noise (a restored model's tensors may
    # take other CPU kernels than the trained ones in memory).
    assert resumed["steps"] == 2
    for key in ("l1", "psnr", "ssim"):
        assert resumed["test"][key] == pytest.approx(results["full"]["test"][key], rel=1e-5)
    chain = results["full"]["long_video"]["chain"]["psnr"]
    assert resumed["long_video"]["chain"]["psnr"] == pytest.approx(chain, rel=1e-5)
    assert "resumed: not comparable" in (out / "study.md").read_text()
    with pytest.raises(InputError, match="other settings"):
        study.run_study(study.Settings(steps=3, overrides=overrides), out, ["full"])


def test_arms_differ_from_full_in_their_ablated_setting_only(tmp_path):
    from unianimate.cli import main

    settings = study.Settings(steps=2)
    configs, temporal_modules = {}, {}
    for arm in study.ARMS:
        cli = main(study.arm_args(arm, settings, tmp_path), run=False)  # parsed and built, not run
        configs[arm] = _flat(yaml.safe_load(cli.parser.dump(cli.config)))
        temporal_modules[arm] = {
            (type(m).__name__, getattr(m, "bidirectional", None))
            for m in cli.model.denoiser.modules()
            if type(m).__name__ in ("TemporalMamba", "TemporalTransformer")
        }
    temporal = "model.denoiser.unet.temporal"
    assert configs["full"][temporal] == "transformer"
    expected = {
        "no_reference_pose": {"model.denoiser.reference_pose": False},
        "no_reference_guidance": {"model.denoiser.reference_guidance": False},
        "no_first_frame": {"model.objective.p_first_frame": 0.0},
    }
    if configs["full"]["model.dropout.p_reference"] != 0.0:
        # The ablation also sets p_reference 0 (it would drop a condition this model does not
        # have): a difference only where the demo config drops the reference.
        expected["no_reference_guidance"]["model.dropout.p_reference"] = 0.0
    for arm, config in configs.items():
        differ = {
            k: config.get(k)
            for k in configs["full"].keys() | config.keys()
            if configs["full"].get(k) != config.get(k) and "root_dir" not in k and "save_dir" not in k
        }
        if arm == "full":
            assert differ == {}
        elif arm in expected:
            assert differ == expected[arm]
        elif arm == "mamba_bidirectional":
            assert differ == {temporal: "mamba"}
        else:  # the temporal module and its own settings only
            assert differ[f"{temporal}.class_path"] == "unianimate.models.temporal.MambaTemporal"
            assert differ[f"{temporal}.bidirectional"] is False
            assert all(k.startswith(temporal) for k in differ)
    assert temporal_modules["full"] == {("TemporalTransformer", None)}
    assert temporal_modules["mamba_bidirectional"] == {("TemporalMamba", True)}
    assert temporal_modules["mamba_causal"] == {("TemporalMamba", False)}


def _config(out, arm):
    return next((out / "runs" / arm).glob("version_*/config.yaml"))


def _example(out, arm):
    """The held-out clip example the arm's data module used (size and skeleton drawing)."""
    from datamodules.clips import ClipExample

    data = yaml.safe_load(_config(out, arm).read_text())["data"]["init_args"]
    return ClipExample(
        num_frames=data["test_num_frames"],
        frame_interval=1,
        height=data["height"],
        width=data["width"],
        draw_hands=data["draw_hands"],
        draw_face=data["draw_face"],
        pose_style=data["pose_style"],
    )
