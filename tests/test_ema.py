import pytest
import torch
from torch import nn

from unianimate.ema import EMA


def test_ema_matches_hand_computation_with_warmup():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    net.bias.requires_grad_(False)  # frozen parameters are not averaged
    ema = EMA(net, decay=0.9, warmup=True)
    assert set(ema.shadow) == {"weight"}
    expected = net.weight.detach().clone()
    for n in range(5):
        with torch.no_grad():
            net.weight.add_(torch.randn_like(net.weight))
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * net.weight.detach()
        ema.update(net)
    assert ema.num_updates == 5
    torch.testing.assert_close(ema.shadow["weight"], expected, rtol=1e-6, atol=1e-7)


def test_ema_without_warmup_uses_constant_decay():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.5, warmup=False)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(2.0)
    ema.update(net)
    torch.testing.assert_close(ema.shadow["weight"], start + 1.0)


def test_swapped_in_restores_training_weights():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.5, warmup=False)
    with torch.no_grad():
        net.weight.add_(4.0)
    trained = net.weight.detach().clone()
    ema.update(net)
    with ema.swapped_in(net):
        torch.testing.assert_close(net.weight, ema.shadow["weight"])
    torch.testing.assert_close(net.weight, trained)


def test_state_dict_round_trip_continues_the_same_average():
    torch.manual_seed(1)
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    ema_a = EMA(a, decay=0.99)
    for _ in range(3):
        with torch.no_grad():
            a.weight.add_(0.1)
        ema_a.update(a)
    # "Resume": a new EMA on a copy of the model, loaded from the saved state.
    b.load_state_dict(a.state_dict())
    ema_b = EMA(b, decay=0.99)
    ema_b.load_state_dict(ema_a.state_dict())
    for net, ema in ((a, ema_a), (b, ema_b)):
        with torch.no_grad():
            net.weight.add_(0.1)
        ema.update(net)
    assert ema_b.num_updates == ema_a.num_updates == 4
    assert torch.equal(ema_a.shadow["weight"], ema_b.shadow["weight"])


def test_mismatched_state_is_rejected():
    ema = EMA(nn.Linear(2, 2))
    with pytest.raises(KeyError, match="missing"):
        ema.load_state_dict({"decay": 0.9, "warmup": True, "num_updates": 0, "shadow": {}})
    with pytest.raises(ValueError):
        EMA(nn.Linear(2, 2), decay=1.0)
