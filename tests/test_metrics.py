"""Frame metrics (standard and DisCo conventions), the evaluation protocol without learned weights, PCK."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from unianimate.metrics import frame_metrics as fm
from unianimate.metrics.pck import pck
from unianimate.metrics.protocol import EvalProtocol, VideoMetrics, format_markdown, write_json

# Tiny inputs: intra-op threads cost more than they save (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread")


def _frames(n: int = 2, h: int = 24, w: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def test_identical_frames():
    x = _frames()
    assert torch.isinf(fm.psnr(x, x)).all()
    assert torch.allclose(fm.ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (fm.l1(x, x) == 0).all()
    assert (fm.disco_psnr(x, x) == 100.0).all()
    assert torch.allclose(fm.disco_ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (fm.disco_l1(x, x) == 0).all()


def test_constant_offset_psnr_is_analytic():
    x = _frames() * 0.8
    for offset in (0.1, 0.05):
        expected = 10 * math.log10(1 / offset**2)
        assert torch.allclose(fm.psnr(x + offset, x), torch.full((2,), expected, dtype=torch.float64))
        assert torch.allclose(fm.l1(x + offset, x), torch.full((2,), offset, dtype=torch.float64))
    # On uint8 a 10-level offset is exactly 20 log10(255 / 10) dB in DisCo's convention.
    a = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8)
    assert fm.disco_psnr(a + 10, a).item() == pytest.approx(20 * math.log10(25.5))


def test_uint8_does_not_overflow():
    black = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    assert fm.l1(black, white).item() == 1.0
    assert fm.l1(white, black).item() == 1.0
    assert fm.psnr(black, white).item() == 0.0
    assert fm.disco_l1(black, white).item() == pytest.approx(255 / 64)
    assert fm.disco_psnr(black, white).item() == 0.0
    # uint8 and its float image give the same numbers.
    x = (_frames() * 255).round().to(torch.uint8)
    y = (_frames(seed=1) * 255).round().to(torch.uint8)
    for fn in (fm.l1, fm.psnr, fm.ssim, fm.disco_l1, fm.disco_psnr, fm.disco_ssim):
        assert torch.allclose(fn(x, y), fn(x.float() / 255, y.float() / 255)), fn.__name__


def test_gray_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    x = (_frames(1, 13, 17) * 255).round().to(torch.uint8)
    bgr = x[0].permute(1, 2, 0).numpy()[..., ::-1].copy()
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(fm.rgb_to_gray_uint8(x)[0].numpy(), expected)


def _skimage_ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """skimage.metrics.structural_similarity defaults (uint8 gray), written against SciPy."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    win, np_ = 7, 49
    cov_norm = np_ / (np_ - 1)
    ux, uy = uniform_filter(a, win), uniform_filter(b, win)
    uxx, uyy, uxy = uniform_filter(a * a, win), uniform_filter(b * b, win), uniform_filter(a * b, win)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def test_disco_ssim_matches_skimage_algorithm():
    x = _frames(2, 30, 26)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    got = fm.disco_ssim(x, y)
    gx, gy = fm.rgb_to_gray_uint8(x).numpy(), fm.rgb_to_gray_uint8(y).numpy()
    for i in range(2):
        assert got[i].item() == pytest.approx(_skimage_ssim_reference(gx[i], gy[i]), abs=1e-10)


def test_ssim_decreases_with_noise():
    x = _frames(1, 32, 32)
    g = torch.Generator().manual_seed(0)
    values = [
        fm.ssim((x + s * torch.randn(x.shape, generator=g)).clamp(0, 1), x).item() for s in (0.02, 0.1, 0.3)
    ]
    assert values[0] > values[1] > values[2]


def _video(b: int = 2, f: int = 4, h: int = 32, w: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, f, h, w, generator=g) * 255).round() / 255  # exactly uint8 levels


def test_video_metrics_without_weights_and_resize():
    target = _video()
    generated = (target + 0.05).clamp(0, 1)
    metrics = VideoMetrics(EvalProtocol(resolution=(16, 12)))
    metrics.update(generated, target)
    metrics.update(generated[:1], target[:1])
    out = metrics.compute()
    assert out["num_videos"] == 3 and out["num_frames"] == 12
    assert set(out) >= {"l1", "psnr", "ssim", "mode", "weights"} and "lpips" not in out and "fvd" not in out
    assert out["weights"].startswith("none")
    metrics.reset()
    with pytest.raises(RuntimeError):
        metrics.compute()


def test_modes_differ_as_documented():
    target = _video(seed=1)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    generated = ((target + 0.1 * noise).clamp(0, 1) * 255).round() / 255
    h, w = target.shape[-2:]
    res = {}
    for mode in ("standard", "disco_compat"):
        m = VideoMetrics(EvalProtocol(resolution=(h, w), mode=mode))
        m.update(generated, target)
        res[mode] = m.compute()
    std, disco = res["standard"], res["disco_compat"]
    # L1: DisCo's is the [0, 255] mean absolute error divided by H * W.
    assert disco["l1"] == pytest.approx(std["l1"] * 255 / (h * w), rel=1e-9)
    # PSNR: same per-frame formula on uint8-exact data, only the scale differs.
    assert disco["psnr"] == pytest.approx(std["psnr"], rel=1e-9)
    # SSIM: grayscale 7x7 uniform vs RGB 11x11 gaussian are different numbers.
    assert abs(disco["ssim"] - std["ssim"]) > 1e-3
    # Identical frames: inf in standard, DisCo's 100 dB cap.
    for mode, cap in (("standard", math.inf), ("disco_compat", 100.0)):
        m = VideoMetrics(EvalProtocol(resolution=(h, w), mode=mode))
        m.update(target, target)
        assert m.compute()["psnr"] == cap


def test_protocol_validation_and_selection():
    with pytest.raises(ValueError, match="mode"):
        EvalProtocol(mode="disco")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lpips_heads"):
        EvalProtocol(lpips_vgg="vgg16.pth")
    p = EvalProtocol(num_videos=3, seed=5)
    picked = p.select_videos(10)
    assert picked == sorted(picked) and len(set(picked)) == 3 and picked == p.select_videos(10)
    assert EvalProtocol().select_videos(4) == [0, 1, 2, 3]
    assert EvalProtocol(i3d="/x/random_i3d_rgb.pt").weights_label().startswith("random")
    assert EvalProtocol(i3d="/x/rgb_imagenet.pt").weights_label() == "pretrained"


def test_format_markdown_and_json(tmp_path):
    results = {"l1": 2.66e-4, "psnr": math.inf, "ssim": 0.811, "mode": "disco_compat", "num_videos": 2}
    results["weights"] = "pretrained"
    text = format_markdown(results)
    assert "| L1 ↓ | PSNR ↑ | SSIM ↑ |" in text and "2.660e-04" in text and "inf" in text
    assert "disco_compat" in text and "pretrained" in text
    write_json(results, tmp_path / "out" / "metrics.json")
    loaded = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=None)
    assert loaded["psnr"] == "inf" and loaded["ssim"] == 0.811


def _pose(f: int = 3, k: int = 18, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(f, k, 2))
    return np.concatenate([xy, np.ones((f, k, 1))], axis=-1)


def test_pck_diagonal():
    target = _pose()
    assert pck(target, target, image_size=(60, 80)) == 1.0  # diagonal 100 px -> threshold 5 px
    pred = target.copy()
    pred[:, :9, 0] += 4.0  # inside 5 px
    pred[:, 9:, 0] += 6.0  # outside
    assert pck(pred, target, image_size=(60, 80)) == pytest.approx(0.5)
    # Points invisible in either pose do not count.
    pred[:, 9:, 2] = 0.0
    assert pck(pred, target, image_size=(60, 80)) == 1.0
    pred[..., 2] = 0.0
    assert math.isnan(pck(pred, target, image_size=(60, 80)))
    with pytest.raises(ValueError, match="image_size"):
        pck(target, target)


def test_pck_torso():
    target = _pose(f=2)
    target[:, 1, :2] = [50, 20]  # neck
    target[:, 8, :2] = [40, 60]  # hips: mid-hip (50, 60), torso 40 px -> threshold 2 px
    target[:, 11, :2] = [60, 60]
    pred = target.copy()
    pred[:, :, 1] += 3.0
    assert pck(pred, target, reference="torso") == 0.0
    assert pck(pred, target, threshold=0.1, reference="torso") == 1.0
    target[0, 11, 2] = 0.0  # frame 0 torso hidden: only frame 1 counts
    assert pck(pred, target, threshold=0.1, reference="torso") == 1.0


def test_merged_snapshots_equal_one_process(tmp_path):
    """What ranks accumulate separately, merged, gives the numbers of one process that saw it all."""
    from unianimate.metrics.random_weights import make_tiny_metric_weights

    paths = {k: str(v) for k, v in make_tiny_metric_weights(tmp_path).items()}
    protocol = EvalProtocol(resolution=(32, 24), frames_per_clip=4, **paths)
    target = _video(b=4, f=8)
    generated = (target + 0.1 * _video(b=4, f=8, seed=1)).clamp(0, 1)
    whole, ranks = VideoMetrics(protocol), [VideoMetrics(protocol) for _ in range(3)]
    whole.update(generated, target)
    ranks[0].update(generated[:1], target[:1])
    ranks[1].update(generated[1:], target[1:])  # ranks[2] saw nothing, as a rank without shards
    merged = VideoMetrics(protocol)
    merged.merge([r.snapshot() for r in ranks])
    expected, got = whole.compute(), merged.compute()
    assert got["num_videos"] == 4 and got["fvd_samples"] == expected["fvd_samples"] > 2
    for name in ("l1", "psnr", "ssim", "lpips", "fvd"):
        assert got[name] == pytest.approx(expected[name], rel=1e-9), name
    assert ranks[0].compute()["num_videos"] == 1  # snapshots leave the sources as they were


def test_baselines_beside_the_model(demo_root):
    """Copy reference and autoencoder reconstruction: their own accumulators, the same protocol."""
    from unianimate.batch import VideoBatch
    from unianimate.metrics.baselines import NAMES, BaselineMetrics, copy_reference, format_rows
    from unianimate.models.frozen import FrozenEncoders

    encoders = FrozenEncoders(str(demo_root / "tiny_clip"), str(demo_root / "tiny_vae"))
    model_metrics = VideoMetrics(EvalProtocol(resolution=(16, 16)))
    g = torch.Generator().manual_seed(0)
    video, reference = (
        torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1,
        torch.rand(2, 3, 16, 16, generator=g) * 2 - 1,
    )
    baselines = BaselineMetrics(model_metrics)
    batch = VideoBatch(
        pose=torch.zeros(2, 3, 4, 16, 16),
        ref_pose=torch.zeros(2, 3, 16, 16),
        ref_image=reference,
        video=video,
    )
    baselines.update(batch, encoders, seed=5)
    results = baselines.compute()
    assert set(results) == set(NAMES) and model_metrics.num_videos == 0  # the model's row is untouched
    target, ref01 = (video + 1) / 2, (reference + 1) / 2
    copied = copy_reference(ref01, 4)
    assert torch.equal(copied[:, :, 3], ref01)
    expected = fm.l1(copied.transpose(1, 2).flatten(0, 1), target.transpose(1, 2).flatten(0, 1)).mean()
    assert results["copy_reference"]["l1"] == pytest.approx(float(expected), rel=1e-12)
    latents = encoders.encode_video(video, torch.Generator().manual_seed(5))
    recon = (encoders.decode_video(latents) + 1) / 2
    expected = fm.psnr(recon.transpose(1, 2).flatten(0, 1), target.transpose(1, 2).flatten(0, 1)).mean()
    assert results["autoencoder"]["psnr"] == pytest.approx(float(expected), rel=1e-6)
    model_metrics.update(target, target.clamp(0.1, 0.9))
    table = format_rows(model_metrics.compute(), results)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in lines] == ["", "model", *NAMES.values()]
