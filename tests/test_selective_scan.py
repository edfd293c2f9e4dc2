"""Every selective-scan backend against `selective_scan_ref`: outputs and all eight gradients.

Tolerance (float32): rtol 1e-5 plus atol 1e-5 * max|reference| per tensor; both sides round
differently (different summation orders), so a pure relative bound would fail on entries near 0.
"""

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton's interpreter runs kernels on CPU tensors; it must be chosen before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from unianimate.models.selective_scan import (  # noqa: E402
    CHUNK,
    ScanBackendUnavailable,
    get_selective_scan,
    selective_scan_ref,
    selective_scan_torch,
)

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_MAMBA_SSM = importlib.util.find_spec("mamba_ssm") is not None
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def _inputs(b: int, d: int, n: int, length: int, dtype=torch.float32, device="cpu") -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * length + n)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    tensors = [
        r(b, d, length),  # u
        0.5 * r(b, d, length),  # delta (pre-bias, pre-softplus)
        -0.5 - torch.rand(d, n, generator=g, dtype=dtype) * n,  # A < 0, S4D-like spread
        r(b, n, length),  # B
        r(b, n, length),  # C
        r(d),  # D
        r(b, d, length),  # z
        r(d) - 2.0,  # delta_bias
    ]
    return [t.to(device).requires_grad_() for t in tensors]


def _compare(fn, b: int, d: int, n: int, length: int, device: str = "cpu", softplus: bool = True) -> None:
    xs = _inputs(b, d, n, length, device=device)
    ref = selective_scan_ref(*xs, delta_softplus=softplus)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, xs, grad_out)
    out = fn(*xs, delta_softplus=softplus)
    grads = torch.autograd.grad(out, xs, grad_out)
    for name, got, want in zip(["out", *NAMES], [out, *grads], [ref, *ref_grads]):
        atol = 1e-5 * want.abs().max().item() + 1e-7
        torch.testing.assert_close(got, want, rtol=1e-5, atol=atol, msg=lambda m, k=name: f"{k}: {m}")


@pytest.mark.parametrize("length", [1, 2, 7, 64, 256])
@pytest.mark.parametrize("d_state", [1, 4, 16])
def test_torch_matches_reference(length: int, d_state: int) -> None:
    _compare(selective_scan_torch, 2, 8, d_state, length)


def test_torch_without_optional_inputs() -> None:
    xs = _inputs(2, 8, 4, 33)
    u, delta, A, B, C = xs[:5]
    ref = selective_scan_ref(u, delta, A, B, C)
    torch.testing.assert_close(selective_scan_torch(u, delta, A, B, C), ref, rtol=1e-5, atol=1e-5)


def test_torch_gradcheck_float64() -> None:
    xs = [x.detach().double().requires_grad_() for x in _inputs(2, 3, 2, 21)]  # 21 > one chunk
    assert torch.autograd.gradcheck(lambda *a: selective_scan_torch(*a, delta_softplus=True), xs)


def test_torch_bfloat16_inputs_compute_in_float32() -> None:
    xs = [x.detach().bfloat16() for x in _inputs(2, 8, 4, 9)]
    out = selective_scan_torch(*xs, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, selective_scan_ref(*xs, delta_softplus=True), rtol=0, atol=0)


TRITON_CASES = [(1, 8, 1, 1), (1, 8, 16, 2), (2, 12, 4, 7), (1, 8, 16, 64), (1, 8, 4, 256)]


@pytest.mark.skipif(not HAS_TRITON, reason='triton not installed: pip install "triton>=3.0"')
@pytest.mark.parametrize(("b", "d", "d_state", "length"), TRITON_CASES)
def test_triton_matches_reference(b: int, d: int, d_state: int, length: int) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1, set above
    _compare(get_selective_scan("triton"), b, d, d_state, length, device=device)


@pytest.mark.skipif(not HAS_TRITON, reason='triton not installed: pip install "triton>=3.0"')
def test_triton_without_softplus_or_optionals() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    xs = _inputs(2, 8, 4, 19, device=device)
    u, delta, A, B, C = xs[:5]
    delta = torch.nn.functional.softplus(delta.detach()).requires_grad_()
    ref = selective_scan_ref(u, delta, A, B, C)
    out = get_selective_scan("triton")(u, delta, A, B, C)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g, inputs = torch.randn_like(ref), [u, delta, A, B, C]
    for got, want in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.skipif(not (HAS_MAMBA_SSM and torch.cuda.is_available()), reason="needs mamba_ssm and CUDA")
@pytest.mark.parametrize("length", [1, 7, 256])
def test_mamba_ssm_matches_reference(length: int) -> None:
    _compare(get_selective_scan("mamba_ssm"), 2, 64, 16, length, device="cuda")


@pytest.mark.skipif(HAS_MAMBA_SSM, reason="mamba_ssm is installed here")
def test_mamba_ssm_missing_raises_with_install_command() -> None:
    with pytest.raises(ScanBackendUnavailable, match=r'pip install "unianimate\[cuda\]"'):
        get_selective_scan("mamba_ssm")


def _saved_per_frame(fn, length: int, b: int = 2, d: int = 8, n: int = 64) -> float:
    """Elements autograd keeps for backward, per frame."""
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    xs = _inputs(b, d, n, length)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*xs, delta_softplus=True)
    return sum(saved) / length


def test_streaming_scan_saves_less_than_a_state_per_frame() -> None:
    """The loop keeps several (b, d, n) states per frame; the streaming scan one per chunk."""
    b, d, n = 2, 8, 64
    state = b * d * n
    inputs = 16 * b * d + 4 * b * n  # generous: u, delta, z, out and B, C copies, per frame
    for length in (16, 256):
        assert _saved_per_frame(selective_scan_torch, length) < state / CHUNK + inputs
        assert _saved_per_frame(selective_scan_ref, length) > 2 * state  # the test can fail
