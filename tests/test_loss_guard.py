"""LossGuard stops before a NaN or spiking loss reaches the weights or a checkpoint; Throughput logs
samples/s and peak memory."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from callbacks.loss_guard import LossGuard, LossSpikeError
from callbacks.throughput import Throughput


class Scripted(L.LightningModule):
    """Loss = (w - target)^2 + the scripted extra loss of each step (a spike, a NaN)."""

    def __init__(self, extra: dict[int, float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.extra = extra

    def training_step(self, batch, batch_idx):
        loss = (self.w - 1.0) ** 2 + 1.0 + self.extra.get(self.global_step + 1, 0.0)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return [{"pose": torch.zeros(2, 1)}] * 100


def fit(tmp_path, module, callbacks, max_steps=30):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, checkpoint],
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    return trainer


@pytest.mark.parametrize(("extra", "match"), [(1e3, "running median"), (math.nan, "non-finite")])
def test_guard_stops_before_the_bad_step(tmp_path, extra, match):
    module = Scripted({12: extra})
    with pytest.raises(LossSpikeError, match=match):
        fit(tmp_path, module, [LossGuard(factor=5.0, window=50, min_history=5)])
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 11  # the last good step; step 12 was neither applied nor saved
    assert torch.equal(saved["state_dict"]["w"], module.w.detach())  # weights untouched by step 12


def test_guard_lets_normal_training_through(tmp_path):
    trainer = fit(tmp_path, Scripted({}), [LossGuard(factor=5.0, min_history=5)], max_steps=15)
    assert trainer.global_step == 15


def test_throughput_logs(tmp_path):
    trainer = fit(tmp_path, Scripted({}), [Throughput(log_every_n_steps=3)], max_steps=8)
    metrics = trainer.callback_metrics
    assert metrics["perf/samples_per_s"] > 0 and metrics["perf/steps_per_s"] > 0
    assert metrics["perf/peak_mem_gib"] > 0.01  # CPU: peak RSS of this process
