"""TemporalMamba and the Mamba block: init, causality, mamba_ssm compatibility, backend errors."""

import importlib.util
import os

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

from unianimate.models.mamba import Mamba  # noqa: E402
from unianimate.models.selective_scan import ScanBackendUnavailable  # noqa: E402
from unianimate.models.temporal_mamba import TemporalMamba  # noqa: E402

HAS_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None

# mamba_ssm.modules.mamba_simple.Mamba(d_model=64) with defaults (d_state 16, d_conv 4, expand 2):
# d_inner 128, dt_rank ceil(64 / 16) = 4.
MAMBA_SSM_PARAMS_D64 = {
    "A_log": (128, 16),
    "D": (128,),
    "in_proj.weight": (256, 64),
    "conv1d.weight": (128, 1, 4),
    "conv1d.bias": (128,),
    "x_proj.weight": (4 + 2 * 16, 128),
    "dt_proj.weight": (128, 4),
    "dt_proj.bias": (128,),
    "out_proj.weight": (64, 128),
}


def _perturbed(module: nn.Module) -> nn.Module:
    """Move every weight off its initial value (the zero output projection in particular)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_mamba_parameters_match_mamba_ssm() -> None:
    block = Mamba(64)
    assert {n: tuple(p.shape) for n, p in block.named_parameters()} == MAMBA_SSM_PARAMS_D64
    # S4D-real init and softplus(dt bias) within [dt_min, dt_max]
    assert torch.allclose(-torch.exp(block.A_log[0]), -torch.arange(1.0, 17.0))
    dt = torch.nn.functional.softplus(block.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    if HAS_MAMBA_SSM:
        from mamba_ssm.modules.mamba_simple import Mamba as UpstreamMamba

        upstream = UpstreamMamba(64)
        assert {n: tuple(p.shape) for n, p in upstream.named_parameters()} == MAMBA_SSM_PARAMS_D64


@pytest.mark.parametrize("bidirectional", [True, False])
def test_identity_at_init(bidirectional: bool) -> None:
    module = TemporalMamba(64, bidirectional=bidirectional)
    x = torch.randn(2, 64, 5, 3, 4)
    out = module(x)
    assert out.shape == x.shape
    assert torch.equal(out, x)


@pytest.mark.parametrize("channels", [8, 12, 48, 320])
def test_group_norm_groups(channels: int) -> None:
    norm = TemporalMamba(channels).norm
    assert channels % norm.num_groups == 0 and norm.num_groups <= 32
    if channels % 32 == 0:
        assert norm.num_groups == 32


def _future_sensitivity(bidirectional: bool, k: int = 3) -> tuple[float, float]:
    """Max change of outputs at frames <= k and > k when only frames > k of the input change.

    GroupNorm takes its statistics over all frames (SPEC §2), so it is removed here to test the
    frame mixing itself.
    """
    module = _perturbed(TemporalMamba(32, bidirectional=bidirectional))
    module.norm = nn.Identity()
    x = torch.randn(2, 32, 8, 2, 3)
    x2 = x.clone()
    x2[:, :, k + 1 :] += torch.randn_like(x2[:, :, k + 1 :])
    diff = (module(x) - module(x2)).abs()
    return diff[:, :, : k + 1].max().item(), diff[:, :, k + 1 :].max().item()


def test_causal_ignores_future_frames() -> None:
    past, future = _future_sensitivity(bidirectional=False)
    assert past == 0.0
    assert future > 1e-3


def test_bidirectional_sees_both_directions() -> None:
    past, future = _future_sensitivity(bidirectional=True)
    assert past > 1e-3 and future > 1e-3


def test_output_and_gradients_flow() -> None:
    module = _perturbed(TemporalMamba(32))
    x = torch.randn(1, 32, 6, 2, 2, requires_grad=True)
    module(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.skipif(HAS_MAMBA_SSM, reason="mamba_ssm is installed here")
def test_mamba_ssm_backend_missing_raises_with_install_command() -> None:
    with pytest.raises(ScanBackendUnavailable, match=r"pip install .*mamba-ssm") as info:
        TemporalMamba(32, scan_backend="mamba_ssm")
    assert isinstance(info.value, ImportError)


def test_unknown_backend_raises() -> None:
    with pytest.raises(ValueError, match="scan_backend"):
        TemporalMamba(32, scan_backend="cuda")  # type: ignore[arg-type]


@pytest.mark.skipif(not HAS_TRITON, reason='triton not installed: pip install "triton>=3.0"')
def test_triton_backend_matches_torch_backend() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reference = _perturbed(TemporalMamba(8)).to(device)
    fused = TemporalMamba(8, scan_backend="triton").to(device)
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(1, 8, 5, 2, 1, device=device)
    outs, grads = [], []
    for module in (reference, fused):
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.square().sum().backward()
        outs.append(out)
        grads.append([xi.grad, *(p.grad for p in module.parameters())])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
