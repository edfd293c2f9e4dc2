import math

import pytest
import torch

from unianimate.conditions import DROPPABLE
from unianimate.diffusion.condition_dropout import ConditionDropout


def test_observed_rates_match_configuration_within_three_sigma():
    cfg = ConditionDropout(
        p_pose=0.5, p_clip=0.3, p_local_image=0.7, p_reference=0.1, p_all_drop=0.1, p_all_keep=0.15
    )
    n = 20_000
    drop = cfg.sample(n, generator=torch.Generator().manual_seed(0))
    all_dropped = torch.stack([drop[k] for k in DROPPABLE]).all(0)
    none_dropped = ~torch.stack([drop[k] for k in DROPPABLE]).any(0)
    probs = cfg.probabilities()
    independent = 1 - cfg.p_all_drop - cfg.p_all_keep
    for name in DROPPABLE:
        expected = cfg.p_all_drop + independent * probs[name]
        sigma = math.sqrt(expected * (1 - expected) / n)
        assert abs(drop[name].float().mean().item() - expected) < 3 * sigma, name
    # P(all dropped) and P(none dropped) include the independent draws that happen to agree.
    p_all = cfg.p_all_drop + independent * math.prod(probs.values())
    p_none = cfg.p_all_keep + independent * math.prod(1 - p for p in probs.values())
    for observed, expected in ((all_dropped, p_all), (none_dropped, p_none)):
        sigma = math.sqrt(expected * (1 - expected) / n)
        assert abs(observed.float().mean().item() - expected) < 3 * sigma


def test_extremes():
    keep = ConditionDropout(0, 0, 0, 0, 0, 0).sample(100)
    assert not any(v.any() for v in keep.values())
    drop = ConditionDropout(0, 0, 0, 0, 1.0, 0).sample(100)
    assert all(v.all() for v in drop.values())


def test_invalid_probabilities_are_rejected():
    with pytest.raises(ValueError, match="p_pose"):
        ConditionDropout(p_pose=1.5)
    with pytest.raises(ValueError, match="exceed"):
        ConditionDropout(p_all_drop=0.6, p_all_keep=0.6)
