"""A Mamba (S6) block, parameter-compatible with `mamba_ssm.modules.mamba_simple.Mamba`.

Parameter names, shapes and initialisation follow mamba_ssm 2.x's `Mamba` (Gu & Dao, 2023,
"Mamba: Linear-Time Sequence Modeling with Selective State Spaces", Sec. 3 and App. E), so a
state dict moves between the two unchanged. The forward is mamba_ssm's reference ("slow") path
with the selective scan taken from an explicit backend.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from unianimate.models.selective_scan import ScanBackend, get_selective_scan


class Mamba(nn.Module):
    """in_proj -> causal depthwise conv1d -> SiLU -> selective scan (gated by SiLU(z)) -> out_proj.

    d_inner = expand * d_model; dt_rank = ceil(d_model / 16).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        scan_backend: ScanBackend = "torch",
    ) -> None:
        super().__init__()
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.scan = get_selective_scan(scan_backend)  # fails here, loudly, if not installed

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # mamba_ssm's dt init: weights keep variance; softplus(bias) is log-uniform in [dt_min, dt_max].
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus
        self.dt_proj.bias._no_reinit = True

        # S4D-real init: A = -(1, 2, ..., d_state) for every channel, stored as log(-A).
        A = repeat(torch.arange(1, d_state + 1, dtype=torch.float32), "n -> d n", d=self.d_inner)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, l, d) -> (b, l, d), causal along l."""
        length = x.shape[1]
        xz = rearrange(self.in_proj(x), "b l e -> b e l")
        u, z = xz.chunk(2, dim=1)
        u = F.silu(self.conv1d(u)[..., :length])  # causal: drop the right padding
        dt, B, C = self.x_proj(rearrange(u, "b e l -> b l e")).split(
            [self.dt_rank, self.d_state, self.d_state], dim=-1
        )
        delta = rearrange(F.linear(dt, self.dt_proj.weight), "b l e -> b e l")  # bias goes in the scan
        y = self.scan(
            u,
            delta,
            -torch.exp(self.A_log.float()),
            rearrange(B, "b l n -> b n l"),
            rearrange(C, "b l n -> b n l"),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )
        return self.out_proj(rearrange(y, "b e l -> b l e"))
