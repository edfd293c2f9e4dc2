"""SIGUSR1 / SIGTERM to a running CPU fit: ``PreemptionCheckpoint`` writes last.ckpt at the next step
boundary and the run stops with exit code 128 + the signal (not 0: it did not reach its end);
``--ckpt_path last`` continues from that step. A signal during start-up stops it with one line."""

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
    assert process.wait(120) == 128 + signal.SIGUSR1, log.read_text()[-4000:]
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


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_exits_non_zero(data, tmp_path):
    """Before: Lightning's SIGTERM handler stopped the run with nothing saved and exit code 0."""
    run_dir, record, log = tmp_path / "run", tmp_path / "steps.jsonl", tmp_path / "fit.log"
    process = start(fit_command(write_overlay(data, run_dir, 1000, 1000)), environment(data, record), log)
    wait_for(lambda: len(records(record)) >= 2, process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 128 + signal.SIGTERM, log.read_text()[-4000:]
    steps = [r["step"] for r in records(record)]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == steps[-1]
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"error: SIGTERM: stopped at step {steps[-1]} before the end; saved "), last


SIGNAL_AT_SETUP = """
import os, signal
import lightning as L


class SignalAtSetup(L.Callback):
    def __init__(self, signal_name: str) -> None:
        self.signum = signal.Signals[signal_name]

    def setup(self, trainer, pl_module, stage):
        os.kill(os.getpid(), self.signum)  # arrives during start-up, before the first step
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGUSR1", "SIGTERM"])
def test_a_signal_during_start_up_exits_non_zero_with_one_line(data, tmp_path, name):
    """Before: SIGUSR1 killed the process without a word; SIGTERM exited 0."""
    import yaml

    run_dir, record, log = tmp_path / "run", tmp_path / "steps.jsonl", tmp_path / "fit.log"
    (tmp_path / "signal_at_setup.py").write_text(SIGNAL_AT_SETUP)
    overlay = write_overlay(data, run_dir, 1000, 1000)
    config = yaml.safe_load(overlay.read_text())
    config["trainer"]["callbacks"].append(
        {"class_path": "signal_at_setup.SignalAtSetup", "init_args": {"signal_name": name}}
    )
    overlay.write_text(yaml.safe_dump(config))
    env = environment(data, record)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    process = start(fit_command(overlay), env, log)
    assert process.wait(120) == 128 + signal.Signals[name], log.read_text()[-4000:]
    assert records(record) == [] and not (run_dir / "checkpoints").exists()
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"error: {name} during start-up, before the first training step"), last
