"""Loading metric network weights from local files (nothing is downloaded)."""

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor


def load_state_file(path: str | Path, what: str) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or torch ``.pt``/``.pth`` state dict; a missing file says what to supply."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: supply {what}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected {what}")
    return state
