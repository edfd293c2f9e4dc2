"""Fréchet video distance: clips -> I3D features -> Fréchet distance between two Gaussians.

FVD (Unterthiner et al. 2018) is the Fréchet distance between Gaussians fitted to I3D features of
real and generated clips. The features here are the 400 Kinetics logits of I3D (averaged over the
temporal positions), the choice of the reference implementation (TF-Hub ``i3d-kinetics-400``
output, also used by StyleGAN-V and DisCo), not the 1024-d pooled Mixed_5c activations.

:func:`frechet_distance` is the SciPy reference (``scipy.linalg.sqrtm``, as in pytorch-fid's
``calculate_frechet_distance``); :func:`frechet_distance_torch` computes the same number from
symmetric eigendecompositions in float64 and is tested equal to it.
"""

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy import linalg
from torch import Tensor


def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) features -> mean (d,) and unbiased covariance (d, d) in float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors (n, d), got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), via scipy.linalg.sqrtm (reference path)."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component {np.abs(covmean.imag).max()}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_torch(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Same as :func:`frechet_distance`; Tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))).

    The product S1^(1/2) S2 S1^(1/2) is symmetric positive semi-definite and similar to S1 S2, so
    ``eigvalsh`` suffices and no complex arithmetic is involved. ``eps`` is unused (kept for the
    shared signature): negative round-off eigenvalues are clamped to zero instead.
    """
    s1 = torch.as_tensor(sigma1, dtype=torch.float64)
    s2 = torch.as_tensor(sigma2, dtype=torch.float64)
    diff = torch.as_tensor(mu1, dtype=torch.float64) - torch.as_tensor(mu2, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(s1)
    sqrt_s1 = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    inner = sqrt_s1 @ s2 @ sqrt_s1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return float(diff @ diff + s1.trace() + s2.trace() - 2.0 * tr_covmean)


def fvd_from_features(
    generated: Tensor | np.ndarray, target: Tensor | np.ndarray, backend: Literal["scipy", "torch"] = "scipy"
) -> float:
    """Fréchet distance between two feature sets (n1, d) and (n2, d).

    ``scipy`` is the reference; ``torch`` gives the same value (tested) and at d = 400 is tens of
    times cheaper than ``sqrtm``'s Schur decomposition, which matters on a busy CPU.
    """
    fd = {"scipy": frechet_distance, "torch": frechet_distance_torch}[backend]
    return fd(*gaussian_stats(generated), *gaussian_stats(target))


def split_clips(video: Tensor, frames_per_clip: int, stride: int = 1) -> Tensor:
    """(b, c, f, H, W) -> non-overlapping clips (b, n, c, frames_per_clip, H, W).

    Frames are first subsampled by ``stride`` (every stride-th frame), then cut into consecutive
    clips; trailing frames that do not fill a clip are dropped.
    """
    video = video[:, :, ::stride]
    n = video.shape[2] // frames_per_clip
    if n == 0:
        raise ValueError(
            f"video has {video.shape[2]} frames after stride {stride}, fewer than frames_per_clip={frames_per_clip}"
        )
    video = video[:, :, : n * frames_per_clip]
    return rearrange(video, "b c (n t) h w -> b n c t h w", t=frames_per_clip)


def i3d_input(clips: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Clips (b, 3, t, H, W) in [0, 1] -> resized to size x size and scaled to [-1, 1] for I3D.

    The aspect ratio is not kept (frames are squashed to a square), as in DisCo and StyleGAN-V.
    """
    b = clips.shape[0]
    frames = rearrange(clips, "b c t h w -> (b t) c h w")
    if frames.shape[-2:] != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode=mode, antialias=True, align_corners=False)
    frames = frames.clamp(0.0, 1.0) * 2.0 - 1.0
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b)
