"""The learning-rate schedule: linear warm-up, then constant or a cosine to 0 at max_steps."""

from __future__ import annotations

import math

import pytest

from unianimate.optim import lr_factor


def test_warmup_then_constant():
    factor = lr_factor(10)
    assert [factor(s) for s in (0, 4, 9, 10, 10_000)] == [0.1, 0.5, 1.0, 1.0, 1.0]


def test_cosine_reaches_zero_at_max_steps():
    factor = lr_factor(10, "cosine", 110)
    assert factor(0) == 0.1 and factor(9) == 1.0
    assert factor(10) == 1.0
    assert factor(60) == pytest.approx(0.5, abs=1e-15)
    assert factor(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    assert factor(110) == pytest.approx(0.0, abs=1e-15) and factor(200) == factor(110)


def test_cosine_needs_a_budget():
    with pytest.raises(ValueError, match="max_steps above warmup_steps"):
        lr_factor(10, "cosine", 5)
    with pytest.raises(ValueError, match="max_steps"):
        lr_factor(10, "cosine", None)
