"""tools/convert_checkpoint.py zero: export to safetensors (the ZeRO shard consolidation itself is
Lightning's converter and runs in tools/gpu_check_deepspeed.py, which needs CUDA)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from convert_checkpoint import convert_zero, main  # noqa: E402


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "last.ckpt"
    state = {
        "model.unet.w": torch.arange(6.0).view(2, 3),
        "model.b": torch.ones(2),
        "encoders.vae.x": torch.zeros(1),
    }
    ema = {
        "decay": 0.99,
        "warmup": True,
        "num_updates": 7,
        "shadow": {"unet.w": torch.full((2, 3), 0.5), "b": torch.ones(2)},
    }
    torch.save({"state_dict": state, "ema": ema, "global_step": 7}, path)
    return path


@pytest.mark.parametrize("ema", [False, True])
def test_export_safetensors(checkpoint, tmp_path, ema):
    out = tmp_path / "denoiser.safetensors"
    assert convert_zero(checkpoint, out, ema=ema) == 2
    weights = load_file(out)
    assert set(weights) == {"unet.w", "b"}  # our module names, no encoders
    expected = torch.full((2, 3), 0.5) if ema else torch.arange(6.0).view(2, 3)
    assert torch.equal(weights["unet.w"], expected)


def test_cli_and_errors(checkpoint, tmp_path, capsys):
    main(["zero", str(checkpoint), str(tmp_path / "x.safetensors")])
    assert "wrote 2 tensors" in capsys.readouterr().out
    with pytest.raises(ValueError, match=".ckpt or .safetensors"):
        convert_zero(checkpoint, tmp_path / "x.bin")
    torch.save({"state_dict": {}}, tmp_path / "no_ema.ckpt")
    with pytest.raises(KeyError, match="no EMA"):
        convert_zero(tmp_path / "no_ema.ckpt", tmp_path / "y.safetensors", ema=True)
