"""Per-frame L1, PSNR and SSIM between generated and ground-truth frames.

Every function takes two frame batches of the same shape, ``(n, 3, H, W)``, and returns one value
per frame, ``(n,)``, in float64; averaging over frames and videos is the caller's job
(:class:`unianimate.metrics.protocol.VideoMetrics`). Inputs are float in [0, 1] or uint8 in
[0, 255]; uint8 is widened before any arithmetic, so differences never wrap around.

Two families:

* ``standard``: computed on [0, 1] floats (L1 mean absolute error, PSNR with data range 1, SSIM
  with an 11x11 gaussian window on RGB through torchmetrics).
* ``disco_*``: the conventions of DisCo's evaluation script (``tool/metrics/ssim_l1_lpips_psnr.py``
  in Wangt-CN/DisCo), which TikTok numbers in this field (UniAnimate's included) are reported with.
  Frames are first quantised to uint8 as DisCo read them back from saved PNG/JPG files.
"""

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

# cv2.cvtColor(..., COLOR_BGR2GRAY) on uint8: BT.601 weights in 15-bit fixed point, rounded
# (OpenCV's RY15/GY15/BY15 and gray_shift, imgproc/src/color.hpp); reproduced exactly so the
# grayscale SSIM of ``disco_ssim`` sees DisCo's inputs bit for bit (tested against cv2).
_GRAY_R, _GRAY_G, _GRAY_B, _GRAY_SHIFT = 9798, 19235, 3735, 15


def _check_pair(generated: Tensor, target: Tensor) -> None:
    if generated.shape != target.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ")
    if generated.ndim != 4 or generated.shape[1] != 3:
        raise ValueError(f"expected frames (n, 3, H, W), got {tuple(generated.shape)}")


def to_float01(frames: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1] (floats are clamped)."""
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    return frames.float().clamp(0.0, 1.0)


def to_uint8(frames: Tensor) -> Tensor:
    """uint8 passes through; float [0, 1] is rounded to the nearest of 256 levels (as saving a PNG)."""
    if frames.dtype == torch.uint8:
        return frames
    return (frames.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def l1(generated: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error on [0, 1]: (n, 3, H, W) x2 -> (n,)."""
    _check_pair(generated, target)
    diff = (to_float01(generated).double() - to_float01(target).double()).abs()
    return diff.flatten(1).mean(1)


def psnr(generated: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB on [0, 1] with data range 1; identical frames give +inf: (n, 3, H, W) x2 -> (n,)."""
    _check_pair(generated, target)
    mse = (to_float01(generated).double() - to_float01(target).double()).square().flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(generated: Tensor, target: Tensor) -> Tensor:
    """SSIM on RGB [0, 1], gaussian window 11x11 with sigma 1.5 (Wang et al. 2004): -> (n,)."""
    _check_pair(generated, target)
    values = structural_similarity_index_measure(
        to_float01(generated).double(),
        to_float01(target).double(),
        gaussian_kernel=True,
        kernel_size=11,
        sigma=1.5,
        data_range=1.0,
        reduction="none",
    )
    return values


def disco_l1(generated: Tensor, target: Tensor) -> Tensor:
    """DisCo's ``l1_eval``: mean over pixels and channels of |a - b| on the uint8 scale [0, 255],
    divided by H * W. This is where the 1e-4-sized L1 values of published tables come from.
    (n, 3, H, W) x2 -> (n,)."""
    _check_pair(generated, target)
    a, b = to_uint8(generated).double(), to_uint8(target).double()
    h, w = a.shape[-2:]
    return (a - b).abs().flatten(1).mean(1) / float(h * w)


def disco_psnr(generated: Tensor, target: Tensor) -> Tensor:
    """DisCo's ``psnr_eval`` as corrected: MSE on the uint8 scale computed in float (the original
    script subtracted uint8 arrays, which wraps around), peak 255, and 100 dB for identical frames.
    (n, 3, H, W) x2 -> (n,)."""
    _check_pair(generated, target)
    a, b = to_uint8(generated).double(), to_uint8(target).double()
    mse = (a - b).square().flatten(1).mean(1)
    value = 20.0 * torch.log10(255.0 / mse.sqrt())
    return torch.where(mse == 0, torch.full_like(value, 100.0), value)


def rgb_to_gray_uint8(frames: Tensor) -> Tensor:
    """RGB uint8 (n, 3, H, W) -> gray uint8 (n, H, W), bit-exact with OpenCV's BGR2GRAY."""
    rgb = to_uint8(frames).int()
    gray = _GRAY_R * rgb[:, 0] + _GRAY_G * rgb[:, 1] + _GRAY_B * rgb[:, 2]
    return ((gray + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT).to(torch.uint8)


def disco_ssim(generated: Tensor, target: Tensor) -> Tensor:
    """DisCo's SSIM: ``skimage.metrics.structural_similarity`` defaults on the uint8 grayscale frames:
    7x7 uniform window, sample covariance (N / (N - 1)), K1 0.01, K2 0.03, data range 255, mean over
    the region where the window fits. (n, 3, H, W) x2 -> (n,)."""
    _check_pair(generated, target)
    x = rgb_to_gray_uint8(generated).double().unsqueeze(1)
    y = rgb_to_gray_uint8(target).double().unsqueeze(1)
    win = 7
    if min(x.shape[-2:]) < win:
        raise ValueError(f"disco_ssim needs frames of at least {win}x{win}, got {tuple(x.shape[-2:])}")
    cov_norm = win * win / (win * win - 1.0)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2

    def mean(t: Tensor) -> Tensor:
        # Unpadded pooling gives exactly skimage's filtered image cropped by (win - 1) // 2.
        return torch.nn.functional.avg_pool2d(t, win, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
