"""Every key of the released checkpoint maps exactly once to our modules, and back (STYLE §12)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from unianimate.models.state_dict_adapter import official_to_ours, ours_to_official
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

FULL_KEYS = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_unianimate" / "full_keys.tsv"
)


def _official_shapes() -> dict[str, tuple[int, ...]]:
    if not FULL_KEYS.exists():
        pytest.skip(f"official key list not found at {FULL_KEYS}")
    shapes = {}
    for line in FULL_KEYS.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        assert dtype == "float32"
        shapes[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return shapes


def _release_state_dict() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        model = UniAnimate(UNet3D())  # the defaults are the release
    return model.state_dict()


def test_release_keys_and_shapes_match_official() -> None:
    official = _official_shapes()
    assert len(official) == 1544
    assert sum(math.prod(s) for s in official.values()) == 1_416_564_300
    mapped = ours_to_official(_release_state_dict())
    assert set(mapped) == set(official)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == official


def test_round_trip_is_one_to_one() -> None:
    ours = _release_state_dict()
    official = ours_to_official(ours)
    assert len(official) == len(ours)
    back = official_to_ours(official)
    assert list(back) == list(ours)
    assert all(back[k] is ours[k] for k in ours)
    shapes = _official_shapes()
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert ours_to_official(official_to_ours(fake)).keys() == fake.keys()


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(KeyError):
        official_to_ours({"input_blocks.1.0.not_a_layer.weight": torch.zeros(1)})
    with pytest.raises(KeyError):
        ours_to_official({"unet.mid_block.temporal_attn.mamba.in_proj.weight": torch.zeros(1)})
