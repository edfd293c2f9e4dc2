"""Random metric weights in the real files' layouts (LPIPS VGG16 trunk + heads, I3D).

They exercise exactly the loading code of the real files; numbers computed with them are
meaningless, and results name them as random weights (file names start with ``random_``).
"""

import os
from collections.abc import Callable
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


def _replace(path: Path, write: Callable[[str], None]) -> None:
    """Write to a temporary file beside ``path``, then rename it over ``path``. Every rank of a
    ``unianimate test`` writes the same files into the same folder and then reads them: written in
    place, one rank could read a file another was rewriting (a truncated read, on a busy machine)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(str(tmp))
    os.replace(tmp, path)


def make_tiny_metric_weights(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write the three random weight files into ``out_dir``; returns their paths by protocol field.
    The files are replaced whole (never seen half written) and the global RNG is left as it was."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lpips, i3d_model = _he_init(LPIPS()), _he_init(InceptionI3d())
    state = lpips.state_dict()
    vgg = {k: v.contiguous() for k, v in state.items() if k.startswith("features.")}
    # Trained LPIPS heads are non-negative (clamped during training); keep that property.
    heads = {f"lin{i}.model.1.weight": state[f"heads.{i}.weight"].abs() for i in range(5)}
    paths = {
        "lpips_vgg": out / "random_vgg16.safetensors",
        "lpips_heads": out / "random_lpips_vgg_heads.pth",
        "i3d": out / "random_i3d_rgb.pt",
    }
    _replace(paths["lpips_vgg"], lambda f: save_file(vgg, f, metadata={"weights": "random"}))
    _replace(paths["lpips_heads"], lambda f: torch.save(heads, f))
    # The 2018 pytorch-i3d file predates BatchNorm's num_batches_tracked; mirror that.
    i3d = {k: v for k, v in i3d_model.state_dict().items() if not k.endswith("num_batches_tracked")}
    _replace(paths["i3d"], lambda f: torch.save(i3d, f))
    return paths
