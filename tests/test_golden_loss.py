"""A stored loss curve for the first steps of the tiny demo config catches accidental numeric changes.

Regenerate deliberately (after an intended change) with:
    UNIANIMATE_UPDATE_GOLDEN=1 pytest tests/test_golden_loss.py
"""

from __future__ import annotations

import json
import os

import lightning as L
import pytest
from demo_helpers import REPO, demo_overrides

from unianimate.cli import main

GOLDEN = REPO / "tests" / "golden" / "tiny_loss_curve.json"
STEPS = 6
KEEP_OUT = ("SampleVideos", "ModelCheckpoint", "LearningRateMonitor")  # no logging, no files

pytestmark = pytest.mark.slow


class LossRecorder(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_first_steps_match_the_stored_curve(demo_root, tmp_path):
    args = demo_overrides(demo_root, tmp_path, max_steps=STEPS)
    args += [
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
    ]
    cli = main(args, run=False)
    cli.trainer.callbacks = [c for c in cli.trainer.callbacks if type(c).__name__ not in KEEP_OUT]
    recorder = LossRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert len(recorder.losses) == STEPS
    if os.environ.get("UNIANIMATE_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps({"steps": STEPS, "losses": recorder.losses}, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert recorder.losses == pytest.approx(golden, rel=1e-3, abs=1e-5)
