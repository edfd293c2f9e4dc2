"""Pose-following measures (exact synthetic ground truth): closed forms, the cases, the wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from callbacks.pose_following import ROWS, PoseSwap, evaluate_pose_following, format_pose_rows
from datamodules.clips import ClipExample
from datamodules.synthetic import figure_mask, pose_swap_cases
from unianimate.metrics import pose_following as pf
from unianimate.models.frozen import FrozenEncoders


def test_psnr_is_the_mean_of_frame_psnrs():
    a = np.full((2, 8, 6, 3), 100, np.uint8)
    b = a.copy()
    b[0] += 10  # frame 0 off by 10 levels everywhere, frame 1 by 1 level in one of its 144 values
    b[1, 0, 0, 0] += 1
    expected = (20 * np.log10(25.5) + 10 * np.log10(144 * 255**2)) / 2
    assert pf.psnr(b, a) == pytest.approx(expected, rel=1e-12)


def test_motion_psnr_closed_form():
    reference = np.full((8, 6, 3), 100, np.uint8)
    target = np.repeat(reference[None], 2, axis=0)
    target[:, 2:4, 1:3] = 200  # 2 frames x 4 pixels moved by 100 levels
    target[:, 5, 5] = 130  # 30 levels: below MOTION_LEVELS, not part of the region
    generated = target.copy()
    generated[:, 2:4, 1:3, 0] = 190  # one channel off by 10 levels inside the region
    generated[:, 5, 5] = 0  # a large error outside it does not count
    mse = (10 / 255) ** 2 / 3
    assert pf.motion_psnr(generated, target, reference) == pytest.approx(10 * np.log10(1 / mse), rel=1e-12)
    assert np.isnan(pf.motion_psnr(generated, np.repeat(reference[None], 2, 0), reference))


def test_mask_iou_closed_form():
    a = np.zeros((2, 4, 4), bool)
    b = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True  # 4 pixels
    b[0, :2, 1:3] = True  # 4 pixels, 2 shared
    b[1, 3, 3] = True  # 1 pixel only in b, in another frame
    assert pf.mask_iou(a, b) == pytest.approx(2 / 7)
    assert pf.mask_iou(a[:0], b[:0]) == 1.0
    assert pf.fraction_of_way(3.0, 1.0, 5.0) == 0.5


def test_pose_swap_cases_are_exact_and_distinct():
    cases = pose_swap_cases([20_000, 20_001], 6, 64, 48, seed=0)
    again = pose_swap_cases([20_000, 20_001], 6, 64, 48, seed=0)
    for case, same in zip(cases, again):
        np.testing.assert_array_equal(case.frames[0], same.frames[0])
        np.testing.assert_array_equal(case.reference, same.reference)
        assert case.frames[0].shape == (6, 64, 48, 3)
        assert len(case.poses[0]) == 6 and len(case.reference_pose) == 1
        masks = [
            figure_mask(case.identity, f) for f in (case.frames[0], case.frames[1], case.reference[None])
        ]
        assert all(m.any() for m in masks)
        # Two motions and a third pose: the figures do not coincide.
        assert pf.mask_iou(masks[0], masks[1]) < 0.9
        assert pf.mask_iou(masks[0], np.repeat(masks[2], 6, 0)) < 0.9
    other_seed = pose_swap_cases([20_000], 6, 64, 48, seed=1)[0]
    assert not np.array_equal(other_seed.frames[0], cases[0].frames[0])


class _Replay:
    """A stand-in for the LightningModule: 'generates' a chosen video of the batch."""

    def __init__(self, encoders: FrozenEncoders, pick) -> None:
        self.device, self.encoders, self.pick = torch.device("cpu"), encoders, pick

    def generate(self, batch, seed=None):
        return self.pick(batch)


@pytest.fixture(scope="module")
def encoders(demo_root):
    return FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"))


@pytest.fixture(scope="module")
def example():
    return ClipExample(num_frames=6, frame_interval=1, height=64, width=48, pose_style="proportional")


def test_a_model_that_copies_scores_as_the_copy_baseline(encoders, example):
    protocol = PoseSwap(identities=[20_000, 20_001], num_frames=6)
    copies = _Replay(encoders, lambda b: b.ref_image[:, :, None].expand_as(b.video))
    rows = evaluate_pose_following(copies, example, protocol)
    assert rows[ROWS[0]] == rows[ROWS[1]]
    assert rows[ROWS[1]]["swap_margin"] == pytest.approx(0.0, abs=1e-9)  # the pair's margins cancel


def test_the_swap_margin_knows_which_motion_is_whose(encoders, example):
    protocol = PoseSwap(identities=[20_000, 20_001], num_frames=6)
    truth = evaluate_pose_following(_Replay(encoders, lambda b: b.video), example, protocol)
    swapped = evaluate_pose_following(_Replay(encoders, lambda b: b.video.flip(0)), example, protocol)
    model = truth[ROWS[0]]
    assert (
        model["figure_iou"] == 1.0 and model["psnr"] == np.inf
    )  # the truth itself: uint8 -> [-1, 1] -> uint8 is exact
    assert swapped[ROWS[0]]["swap_margin_min"] < 0 < model["swap_margin_min"]
    assert swapped[ROWS[0]]["swap_margin"] == pytest.approx(-model["swap_margin"], rel=1e-9)
    table = format_pose_rows(truth)
    assert "motion-region PSNR" in table and table.count("\n| ") == 3
