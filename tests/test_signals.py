"""SIGUSR1 to a running CPU fit: ``PreemptionCheckpoint`` writes last.ckpt at the next step boundary
and the run exits cleanly; ``--ckpt_path last`` continues from that step."""

from __future__ import annotations

import signal

import pytest
import torch
from scale_helpers import environment, fit_command, make_data, records, run, start, wait_for, write_overlay


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("signal_data"))


@pytest.mark.slow
def test_sigusr1_saves_stops_and_resumes(data, tmp_path):
    run_dir, record, log = tmp_path / "run", tmp_path / "steps.jsonl", tmp_path / "fit.log"
    # ModelCheckpoint would only save at step 1000: any checkpoint on disk comes from the signal.
    overlay = write_overlay(data, run_dir, 1000, 1000)
    process = start(fit_command(overlay), environment(data, record), log)
    wait_for(lambda: len(records(record)) >= 2, process, log)
    process.send_signal(signal.SIGUSR1)
    assert process.wait(120) == 0, log.read_text()[-4000:]
    steps = [r["step"] for r in records(record)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < 1000
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # as Lightning loads it
    assert saved["global_step"] == steps[-1]  # saved after the last step that ran, then stopped
    assert "SIGUSR1: saved" in log.read_text()

    stop = steps[-1]
    resume = write_overlay(data, run_dir, stop + 2, 1000)
    run(fit_command(resume, "--ckpt_path", "last"), environment(data, record), tmp_path / "resume.log")
    assert [r["step"] for r in records(record)][len(steps) :] == [stop + 1, stop + 2]
