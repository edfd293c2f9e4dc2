"""LPIPS v0.1 with the VGG16 trunk (Zhang et al. 2018), in plain PyTorch.

Compatible with ``lpips.LPIPS(net="vgg", version="0.1")`` of the ``lpips`` package
(richzhang/PerceptualSimilarity, ``lpips/lpips.py`` and ``lpips/pretrained_networks.py``). Weights
come from two local files, nothing is downloaded:

* the VGG16 trunk in torchvision's key layout (``features.0.weight`` ... ``features.28.bias``;
  ``classifier.*`` keys are ignored), as ``.pth`` (torchvision's ``vgg16-397923af.pth``) or
  ``.safetensors``;
* the five linear heads in the ``lpips`` package layout (``lin0.model.1.weight`` ...
  ``lin4.model.1.weight``, its ``weights/v0.1/vgg.pth``). :func:`heads_from_lpips` is the adapter
  onto this module's ``heads.{i}.weight`` names.
"""

from pathlib import Path

import torch
from torch import Tensor, nn

from unianimate.metrics.weights import load_state_file

# VGG16 configuration "D": conv widths, "M" = 2x2 max pool. Indices in ``features`` then match
# torchvision's ``vgg16().features`` exactly.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: end indices (exclusive) into ``features``.
_TAP_ENDS = (4, 9, 16, 23, 30)
_TAP_CHANNELS = (64, 128, 256, 512, 512)
# lpips.ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

VGG_LAYOUT = "a torchvision VGG16 state dict (keys 'features.0.weight' ... 'features.28.bias')"
HEADS_LAYOUT = "the lpips package's v0.1 vgg.pth (keys 'lin0.model.1.weight' ... 'lin4.model.1.weight')"


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return nn.Sequential(*layers[:-1])  # LPIPS stops at relu5_3; the last pool is never used


def heads_from_lpips(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Adapter: ``lin{i}.model.1.weight`` (lpips package) -> ``heads.{i}.weight`` (this module)."""
    expected = [f"lin{i}.model.1.weight" for i in range(len(_TAP_CHANNELS))]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise KeyError(f"LPIPS heads: missing {missing}, unexpected {unexpected}; expected {HEADS_LAYOUT}")
    return {f"heads.{i}.weight": state[k] for i, k in enumerate(expected)}


class LPIPS(nn.Module):
    """LPIPS distance. Frozen: built for evaluation only."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: Tensor) -> list[Tensor]:
        """(n, 3, H, W) -> unit-normalised relu1_2 ... relu5_3 activations."""
        x = (x - self.shift) / self.scale
        out, start = [], 0
        for end in _TAP_ENDS:
            x = self.features[start:end](x)
            # lpips.normalize_tensor: divide by the channel norm, eps 1e-10.
            out.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
            start = end
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: (n, 3, H, W), nominally in [-1, 1] -> distance (n,)."""
        total = x.new_zeros(x.shape[0])
        for head, fx, fy in zip(self.heads, self.taps(x), self.taps(y)):
            total = total + head((fx - fy).square()).mean((1, 2, 3))
        return total

    def load_weights(self, vgg_path: str | Path, heads_path: str | Path) -> None:
        """Load the trunk (torchvision layout) and the heads (lpips layout); raise on any key mismatch."""
        vgg = load_state_file(vgg_path, VGG_LAYOUT)
        trunk = {k: v for k, v in vgg.items() if k.startswith("features.")}
        expected = {k for k in self.state_dict() if k.startswith("features.")}
        if set(trunk) != expected:
            missing, unexpected = sorted(expected - set(trunk)), sorted(set(trunk) - expected)
            raise KeyError(f"{vgg_path}: missing {missing}, unexpected {unexpected}; expected {VGG_LAYOUT}")
        heads = heads_from_lpips(load_state_file(heads_path, HEADS_LAYOUT))
        self.load_state_dict({**trunk, **heads}, strict=True)


def load_lpips(vgg_path: str | Path, heads_path: str | Path) -> LPIPS:
    """Build :class:`LPIPS` and load both weight files."""
    model = LPIPS()
    model.load_weights(vgg_path, heads_path)
    return model
