"""Random metric weights in the real files' layouts (LPIPS VGG16 trunk + heads, I3D).

They exercise exactly the loading code of the real files; numbers computed with them are
meaningless, and results name them as random weights (file names start with ``random_``).
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from unianimate.metrics.i3d import InceptionI3d
from unianimate.metrics.lpips import LPIPS


def _he_init(model: nn.Module) -> nn.Module:
    # He-normal convolutions keep activations at unit scale through the ~20 layers, so random
    # features still depend on the input and demo FVD / LPIPS values are not all ~0.
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def make_tiny_metric_weights(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the three random weight files into ``out_dir``; returns their paths by protocol field."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    lpips = _he_init(LPIPS())
    state = lpips.state_dict()
    vgg = {k: v.contiguous() for k, v in state.items() if k.startswith("features.")}
    # Trained LPIPS heads are non-negative (clamped during training); keep that property.
    heads = {f"lin{i}.model.1.weight": state[f"heads.{i}.weight"].abs() for i in range(5)}
    paths = {
        "lpips_vgg": out / "random_vgg16.safetensors",
        "lpips_heads": out / "random_lpips_vgg_heads.pth",
        "i3d": out / "random_i3d_rgb.pt",
    }
    save_file(vgg, str(paths["lpips_vgg"]), metadata={"weights": "random"})
    torch.save(heads, paths["lpips_heads"])
    # The 2018 pytorch-i3d file predates BatchNorm's num_batches_tracked; mirror that.
    i3d = {
        k: v
        for k, v in _he_init(InceptionI3d()).state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    torch.save(i3d, paths["i3d"])
    return paths
