"""Selective scan (Mamba's S6 recurrence) and its explicit backends.

Shape letters here follow `mamba_ssm.ops.selective_scan_interface`: `b` sequences, `d` inner
channels (d_inner), `n` state size (d_state), `l` sequence length (frames).

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t        h: (b, d, n)
    y_t = <h_t, C_t>_n + D * u_t,     out = y * silu(z)

`selective_scan_ref` is the textbook loop (it materialises the (b, d, l, n) tensors) and exists
for tests. `selective_scan_torch` is the streaming one with the same signature: a custom
autograd Function whose forward walks the frames chunk by chunk, keeping only the state at each
chunk boundary, and whose backward is a reverse scan that recomputes the states of one chunk at
a time. Beyond inputs and outputs it holds O(b * d * n * (CHUNK + l / CHUNK)) memory instead of
the O(b * d * n * l) of the loop (and of autograd through it).
"""

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

ScanBackend = Literal["torch", "mamba_ssm", "triton"]

# Frames per chunk of the streaming scan: bounds the (chunk, b, d, n) work buffers, and the
# backward keeps one (b, d, n) state per chunk boundary. Measured on CPU (tools/bench_temporal.py,
# d_inner 640, d_state 16): 4, 8, 16 and 32 run at about the same speed; 8 has the smallest peak
# memory between F = 32 and F = 256.
CHUNK = 8


class ScanBackendUnavailable(ImportError):
    """A scan backend was asked for whose package is not installed."""


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Reference loop (real A, per-sequence B and C), after mamba_ssm's `selective_scan_ref`.

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l); D, delta_bias: (d,). Returns (b, d, l)
    in u's dtype; computes in float32 (float64 stays float64, for gradient checks).
    """
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(compute)
    if delta_softplus:
        delta = F.softplus(delta)
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x = A.new_zeros((u.shape[0], u.shape[1], A.shape[1]))
    ys = []
    for i in range(u.shape[2]):
        x = delta_a[:, :, i] * x + delta_b_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + u * rearrange(D.to(compute), "d -> d 1")
    if z is not None:
        out = out * F.silu(z.to(compute))
    return out.to(dtype_in)


def _chunk_inputs(delta: Tensor, u: Tensor, A: Tensor, B: Tensor, state0: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk's decay and scanned states, written into fresh (t+1, b, d, n) buffers.

    delta, u: (t, b, d); B: (t, b, n); state0: (b, d, n). Returns (decay (t, b, d, n),
    states (t+1, b, d, n)) with states[0] = state0 and states[i+1] = h after frame i.
    """
    decay = torch.exp(delta.unsqueeze(-1) * A)
    states = torch.empty((delta.shape[0] + 1, *state0.shape), dtype=state0.dtype, device=state0.device)
    states[0] = state0
    torch.mul((delta * u).unsqueeze(-1), B.unsqueeze(2), out=states[1:])
    prev = state0
    for h, a in zip(states[1:].unbind(0), decay.unbind(0)):
        h.addcmul_(a, prev)  # h_t = a_t * h_{t-1} + delta_t u_t B_t, in place
        prev = h
    return decay, states


# The contractions below are batched matrix-vector products: on CPU they run several times faster
# than the equivalent einsum, which permutes and copies its operands first.
def _contract_n(x: Tensor, v: Tensor) -> Tensor:
    """(t, b, d, n), (t, b, n) -> (t, b, d): sum over n."""
    return torch.matmul(x, v.unsqueeze(-1)).squeeze(-1)


def _contract_d(x: Tensor, v: Tensor) -> Tensor:
    """(t, b, d, n), (t, b, d) -> (t, b, n): sum over d."""
    return torch.matmul(v.unsqueeze(-2), x).squeeze(-2)


class _StreamingScan(torch.autograd.Function):
    """y = scan(u, delta, A, B, C) without D, z or delta transforms; time-major inputs.

    u, delta: (l, b, d); A: (d, n); B, C: (l, b, n). Returns y: (l, b, d).
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        state = u.new_zeros((u.shape[1], u.shape[2], A.shape[1]))
        boundaries, ys = [], []
        for uc, dc, bc, cc in zip(*(t.split(CHUNK) for t in (u, delta, B, C))):
            boundaries.append(state)
            _, states = _chunk_inputs(dc, uc, A, bc, state)
            ys.append(_contract_n(states[1:], cc))
            state = states[-1].clone()  # keep one state, free the chunk buffer
        ctx.save_for_backward(u, delta, A, B, C, *boundaries)
        return torch.cat(ys)

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor, ...]:
        u, delta, A, B, C, *boundaries = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grads_u, grads_delta, grads_B, grads_C = [], [], [], []
        grad_A = torch.zeros_like(A)
        carry = None  # a_{t+1} * dL/dh_{t+1} from the chunk after this one
        chunks = list(zip(*(t.split(CHUNK) for t in (u, delta, B, C, grad_y)), boundaries))
        for uc, dc, bc, cc, gc, state0 in reversed(chunks):
            decay, states = _chunk_inputs(dc, uc, A, bc, state0)
            grads_C.append(_contract_d(states[1:], gc))
            # dL/dh_t = g_t C_t + a_{t+1} dL/dh_{t+1}: reverse scan over the chunk, in place.
            grad_h = gc.unsqueeze(-1) * cc.unsqueeze(2)
            if carry is not None:
                grad_h[-1] += carry
            nxt = None
            for gh, a in zip(reversed(grad_h.unbind(0)), reversed(decay.unbind(0))):
                if nxt is not None:
                    gh.addcmul_(*nxt)
                nxt = (a, gh)
            carry = decay[0] * grad_h[0]
            # dL/da_t * a_t = dL/dh_t * h_{t-1} * a_t, reusing the states buffer.
            grad_log_a = states[:-1].mul_(grad_h).mul_(decay)
            grad_bu = _contract_n(grad_h, bc)  # dL/d(delta_t u_t)
            grads_delta.append((grad_log_a * A).sum(-1) + grad_bu * uc)
            grad_A += grad_log_a.mul_(dc.unsqueeze(-1)).sum((0, 1))
            grads_u.append(grad_bu * dc)
            grads_B.append(_contract_d(grad_h, dc * uc))
        cat = lambda gs: torch.cat(gs[::-1])  # noqa: E731 - chunks were visited in reverse
        return cat(grads_u), cat(grads_delta), grad_A, cat(grads_B), cat(grads_C)


def selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Streaming selective scan; same signature and shapes as `selective_scan_ref`.

    Computes in float32 (float64 stays float64, for gradcheck); returns u's dtype.
    """
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta = u.to(compute), delta.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(compute)
    if delta_softplus:
        delta = F.softplus(delta)
    # time-major so that each frame is a contiguous (b, d) / (b, n) slab
    time_major = lambda t: rearrange(t.to(compute), "b x l -> l b x").contiguous()  # noqa: E731
    y = _StreamingScan.apply(time_major(u), time_major(delta), A.to(compute), time_major(B), time_major(C))
    out = rearrange(y, "l b d -> b d l")
    if D is not None:
        out = out + u * rearrange(D.to(compute), "d -> d 1")
    if z is not None:
        out = out * F.silu(z.to(compute))
    return out.to(dtype_in)


def _mamba_ssm_scan() -> Callable[..., Tensor]:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise ScanBackendUnavailable(
            'scan_backend="mamba_ssm" needs the mamba-ssm CUDA kernels: pip install "unianimate[cuda]" '
            '(i.e. pip install "mamba-ssm>=2.2" "causal-conv1d>=1.4")'
        ) from err
    return selective_scan_fn


def _triton_scan() -> Callable[..., Tensor]:
    try:
        from unianimate.models.selective_scan_triton import selective_scan_triton
    except ImportError as err:
        raise ScanBackendUnavailable(
            'scan_backend="triton" needs Triton: pip install "triton>=3.0" (or pip install "unianimate[cuda]")'
        ) from err
    return selective_scan_triton


def get_selective_scan(backend: ScanBackend) -> Callable[..., Tensor]:
    """The scan function of `backend`, all with `selective_scan_ref`'s signature.

    Raises ScanBackendUnavailable (an ImportError) with the install command if the backend's
    package is missing; there is no fallback.
    """
    if backend == "torch":
        return selective_scan_torch
    if backend == "mamba_ssm":
        return _mamba_ssm_scan()
    if backend == "triton":
        return _triton_scan()
    raise ValueError(f"unknown scan_backend {backend!r}; expected 'torch', 'mamba_ssm' or 'triton'")
