"""tools/score_demo_video.py reads the panels of a real comparison mp4 as SampleVideos writes it."""

from __future__ import annotations

import sys

import numpy as np
import torch
from demo_helpers import REPO

from unianimate.visualize import comparison_frames, write_comparison_mp4

sys.path.insert(0, str(REPO / "tools"))
from score_demo_video import PANELS, score, split_panels, write_strip  # noqa: E402


def _synthetic_rows(generated_is: str) -> tuple[list[np.ndarray], np.ndarray]:
    from datamodules.synthetic import make_synthetic_video

    rows, truths = [], []
    for identity in (10_000, 10_001):
        frames, _ = make_synthetic_video(identity, 12, 64, 48, seed=3)
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # 3 f H W
        reference, truth = video[:, 11], video[:, :8]
        generated = {"truth": truth, "reference": reference[:, None].expand_as(truth)}[generated_is]
        pose = torch.zeros(3, 8, 64, 48)
        rows.append(comparison_frames(reference, pose, generated, truth))
        truths.append(frames[:8])
    return rows, np.stack(truths)


def test_split_panels_is_exact_on_arrays():
    rows, truths = _synthetic_rows("truth")
    panels = split_panels(np.concatenate(rows, axis=1), 64, 48)
    assert set(panels) == set(PANELS)
    np.testing.assert_array_equal(panels["ground_truth"], truths)
    np.testing.assert_array_equal(panels["generated"], truths)


def test_scores_the_mp4(tmp_path):
    perfect, _ = _synthetic_rows("truth")
    copied, _ = _synthetic_rows("reference")
    good = score(write_comparison_mp4(tmp_path / "good.mp4", perfect), 64, 48)
    floor = score(write_comparison_mp4(tmp_path / "copy.mp4", copied), 64, 48)
    assert (good["samples"], good["frames"]) == (2, 8)
    # A generated panel equal to the truth beats copying the reference by far (H.264 loss aside) ...
    assert good["psnr_generated"] > 30 and good["gain_db"] > 5
    # ... and one that copies the reference scores what copying scores: no gain.
    assert abs(floor["gain_db"]) < 0.5
    assert abs(floor["psnr_copy_reference"] - good["psnr_copy_reference"]) < 0.5
    strip = write_strip(tmp_path / "strip.png", tmp_path / "good.mp4", [0, 7], 64, 48, zoom=2)
    from PIL import Image

    assert Image.open(strip).size == (2 * (2 * 4 * 48 + 4), 2 * 2 * 64)
