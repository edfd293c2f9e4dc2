"""Fréchet distance (SciPy reference vs torch eigen path), Gaussian statistics, clip cutting."""

import numpy as np
import pytest
import torch

from unianimate.metrics.fvd import (
    frechet_distance,
    frechet_distance_torch,
    fvd_from_features,
    gaussian_stats,
    i3d_input,
    split_clips,
)

IMPLEMENTATIONS = [frechet_distance, frechet_distance_torch]


@pytest.mark.parametrize("fd", IMPLEMENTATIONS)
def test_closed_form_diagonal(fd):
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 2.0, size=6), rng.uniform(0.1, 2.0, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fd(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("fd", IMPLEMENTATIONS)
def test_same_distribution_is_zero(fd):
    feats = np.random.default_rng(1).normal(size=(200, 8))
    mu, sigma = gaussian_stats(feats)
    assert abs(fd(mu, sigma, mu, sigma)) < 1e-8


def test_torch_path_equals_scipy_reference():
    rng = np.random.default_rng(2)
    for n, d in ((100, 16), (12, 16)):  # full rank, then rank-deficient covariances
        a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
        b = rng.normal(size=(n, d)) + 0.5
        stats = (*gaussian_stats(a), *gaussian_stats(b))
        assert frechet_distance_torch(*stats) == pytest.approx(frechet_distance(*stats), rel=1e-6, abs=1e-6)
        assert fvd_from_features(a, b, backend="torch") == pytest.approx(fvd_from_features(a, b), rel=1e-6)


def test_sample_estimate_matches_known_gaussians():
    rng = np.random.default_rng(3)
    mu1, mu2 = np.zeros(4), np.array([1.0, 0.0, -1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.0, 1.0, 1.0, 3.0])
    a = mu1 + rng.normal(size=(20000, 4)) * np.sqrt(s1)
    b = mu2 + rng.normal(size=(20000, 4)) * np.sqrt(s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fvd_from_features(a, b) == pytest.approx(expected, rel=0.05)
    assert fvd_from_features(torch.from_numpy(a), torch.from_numpy(a)) == pytest.approx(0.0, abs=1e-8)


def test_gaussian_stats_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))


def test_split_clips():
    video = torch.arange(35.0).view(1, 1, 35, 1, 1).expand(2, 3, 35, 4, 5)
    clips = split_clips(video, frames_per_clip=16)
    assert clips.shape == (2, 2, 3, 16, 4, 5)
    assert clips[0, 1, 0, :, 0, 0].tolist() == list(range(16, 32))  # trailing 3 frames dropped
    strided = split_clips(video, frames_per_clip=8, stride=2)
    assert strided.shape == (2, 2, 3, 8, 4, 5) and strided[0, 0, 0, :3, 0, 0].tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="frames_per_clip"):
        split_clips(video[:, :, :15], frames_per_clip=16)


def test_i3d_input_range_and_size():
    clips = torch.rand(2, 3, 4, 30, 40)
    x = i3d_input(clips, size=24)
    assert x.shape == (2, 3, 4, 24, 24) and x.min() >= -1 and x.max() <= 1
    same = i3d_input(clips[..., :24, :24], size=24)
    assert torch.allclose(same, clips[..., :24, :24] * 2 - 1)
