"""Exact resume: 2N steps in one go == N steps, SIGKILL from outside, ``--ckpt_path last`` for N more
(weights, optimizer, LR schedule, EMA, RNG streams and data position; bitwise on CPU)."""

from __future__ import annotations

import signal

import pytest
import torch
from scale_helpers import environment, fit_command, make_data, records, run, start, wait_for, write_overlay

N = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("resume_data"))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_tensors(a, b, what: str) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), what
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_same_tensors(a[key], b[key], f"{what}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{what}[{i}]")
    else:
        assert a == b, what


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(data, tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full_record, part_record = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    # The reference run and the run to be killed start together (one core each).
    full = start(
        fit_command(write_overlay(data, full_dir, 2 * N, N)),
        environment(data, full_record),
        tmp_path / "full.log",
    )
    # Runs on past step N unless killed; nothing else differs (max_steps touches no training math).
    part_log = tmp_path / "part.log"
    part = start(
        fit_command(write_overlay(data, part_dir, 1000, N)), environment(data, part_record), part_log
    )
    ckpt_dir = part_dir / "checkpoints"
    wait_for(
        lambda: (ckpt_dir / f"epoch=0-step={N}.ckpt").exists() and (ckpt_dir / "last.ckpt").exists(),
        part,
        part_log,
    )
    part.send_signal(signal.SIGKILL)
    assert part.wait(30) == -signal.SIGKILL
    assert not (ckpt_dir / f"epoch=0-step={2 * N}.ckpt").exists(), "killed too late to test anything"
    assert full.wait(240) == 0, (tmp_path / "full.log").read_text()[-4000:]
    assert load(ckpt_dir / "last.ckpt")["global_step"] == N

    resume_overlay = write_overlay(data, part_dir, 2 * N, N)
    run(
        fit_command(resume_overlay, "--ckpt_path", "last"),
        environment(data, part_record),
        tmp_path / "resume.log",
    )

    reference = records(full_record)
    assert [r["step"] for r in reference] == list(range(1, 2 * N + 1))
    resumed = [r for r in records(part_record) if r["step"] > N]
    # part_record also holds the killed run's steps up to (and maybe past) N; the resumed ones come last.
    resumed = resumed[-N:]
    assert [r["step"] for r in resumed] == list(range(N + 1, 2 * N + 1))
    assert [r["keys"] for r in resumed] == [r["keys"] for r in reference[N:]], "data position"
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference[N:]], "losses (bitwise)"

    a = load(full_dir / "checkpoints" / f"epoch=0-step={2 * N}.ckpt")
    b = load(ckpt_dir / f"epoch=0-step={2 * N}.ckpt")
    assert_same_tensors(a["state_dict"], b["state_dict"], "weights")
    assert_same_tensors(a["ema"], b["ema"], "ema")
    assert_same_tensors(a["optimizer_states"], b["optimizer_states"], "optimizer")
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert a["lr_schedulers"][0]["last_epoch"] == 2 * N
