import math

import pytest
import torch

from unianimate.conditions import Conditions
from unianimate.diffusion.objective import DiffusionObjective
from unianimate.diffusion.schedule import add_noise


class Recorder:
    """A stand-in denoiser that records what it saw and returns a fixed prediction."""

    def __init__(self, prediction=None):
        self.inputs = []
        self.prediction = prediction

    def __call__(self, x, t, cond):
        self.inputs.append(x.clone())
        return torch.zeros_like(x) if self.prediction is None else self.prediction


def _batch(b=6, f=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(b, 4, f, 3, 2, generator=g)


def test_first_frame_conditioned_samples_see_their_clean_latent():
    latents = _batch()
    objective = DiffusionObjective(p_first_frame=0.5)
    t, noise, first = objective.draw(latents, torch.Generator().manual_seed(3))
    first = torch.tensor([True, False, True, False, True, False])
    model = Recorder()
    objective(model, latents, Conditions(), t, noise, first)
    seen = model.inputs[0]
    noisy = add_noise(objective.scheduler, latents, noise, t)
    assert torch.equal(seen[first, :, 0], latents[first, :, 0])
    assert torch.equal(seen[~first, :, 0], noisy[~first, :, 0])
    assert torch.equal(seen[:, :, 1:], noisy[:, :, 1:])


def test_frame_zero_leaves_the_loss_when_conditioned():
    latents = _batch()
    objective = DiffusionObjective()
    t, noise, _ = objective.draw(latents, torch.Generator().manual_seed(1))
    first = torch.ones(latents.shape[0], dtype=torch.bool)
    base = objective(Recorder(torch.zeros_like(latents)), latents, Conditions(), t, noise, first)
    wrong0 = torch.zeros_like(latents)
    wrong0[:, :, 0] = 1000.0  # garbage on frame 0 only
    out = objective(Recorder(wrong0), latents, Conditions(), t, noise, first)
    torch.testing.assert_close(out.loss_per_sample, base.loss_per_sample)
    # ... but not when the sample is not first-frame conditioned.
    out = objective(Recorder(wrong0), latents, Conditions(), t, noise, ~first)
    assert (out.loss_per_sample > base.loss_per_sample + 100).all()


def test_loss_is_mse_of_the_v_target():
    latents = _batch(b=2, f=3)
    objective = DiffusionObjective(p_first_frame=0.0)
    t, noise, first = objective.draw(latents, torch.Generator().manual_seed(2))
    out = objective(Recorder(), latents, Conditions(), t, noise, first)
    ac = objective.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1).float()
    v = ac.sqrt() * noise - (1 - ac).sqrt() * latents
    torch.testing.assert_close(out.loss_per_sample, (v**2).mean(dim=(1, 2, 3, 4)), rtol=1e-5, atol=1e-6)


def test_draw_rates_and_ranges():
    latents = torch.zeros(4000, 1, 2, 1, 1)
    objective = DiffusionObjective(p_first_frame=0.3)
    t, noise, first = objective.draw(latents, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() <= 999 and t.float().std() > 250  # uniform over [0, 999]
    sigma = math.sqrt(0.3 * 0.7 / 4000)
    assert abs(first.float().mean().item() - 0.3) < 3 * sigma
    single = torch.zeros(8, 1, 1, 1, 1)
    assert not DiffusionObjective(p_first_frame=1.0).draw(single)[2].any()


def test_listed_timesteps_are_the_only_ones_drawn():
    latents = torch.zeros(400, 1, 2, 1, 1)
    objective = DiffusionObjective(timesteps=[999, 499])
    t = objective.draw(latents, torch.Generator().manual_seed(0))[0]
    assert set(t.tolist()) == {999, 499}
    assert abs((t == 999).float().mean().item() - 0.5) < 0.1  # uniform over the list
    assert objective.untrained([999, 499]) == []
    assert objective.untrained([999, 666, 332]) == [666, 332]
    assert DiffusionObjective().untrained([999, 666, 332]) == []  # all timesteps trained


@pytest.mark.parametrize("bad", [[], [1000], [-1, 500]])
def test_timesteps_outside_the_schedule_are_refused(bad):
    with pytest.raises(ValueError, match="timesteps must be a non-empty list in"):
        DiffusionObjective(timesteps=bad)
