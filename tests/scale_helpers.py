"""Helpers for the scale-out tests: the demo config as a subprocess, tiny and short, with a
recorder callback that writes every training step's loss (exact, as float.hex) and batch keys."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

RECORDER = '''
import json, os
import lightning as L
import torch


class Recorder(L.Callback):
    """Appends one json line per training step to $UA_RECORD.<rank>; EMA shadow saved at fit end."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        line = {"step": trainer.global_step, "loss": float(loss).hex(), "keys": list(batch.key)}
        with open(f"{os.environ['UA_RECORD']}.{trainer.global_rank}", "a") as f:
            f.write(json.dumps(line) + "\\n")

    def on_fit_end(self, trainer, pl_module):
        if pl_module.ema is not None:
            torch.save(pl_module.ema.state_dict(), f"{os.environ['UA_RECORD']}.ema{trainer.global_rank}.pt")
'''


def make_data(root: Path, num_train: int = 16) -> Path:
    """Synthetic shards (8 videos each) and tiny CLIP/VAE folders under ``root``."""
    from datamodules.synthetic import ensure_synthetic_dataset
    from unianimate.models.frozen import make_tiny_clip, make_tiny_vae

    ensure_synthetic_dataset(
        root / "data", num_train=num_train, num_val=2, num_train_identities=4, num_frames=12
    )
    make_tiny_clip(root / "clip")
    make_tiny_vae(root / "vae")
    (root / "recorder.py").write_text(RECORDER)
    return root


def write_overlay(data: Path, run_dir: Path, max_steps: int, every_n: int, extra: dict | None = None) -> Path:
    """A config to compose after configs/demo.yaml: tiny clips, no validation, our callbacks only."""
    overlay = {
        "trainer": {
            "max_steps": max_steps,
            "limit_val_batches": 0,
            "default_root_dir": str(run_dir),
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "deterministic": True,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": every_n, "save_top_k": -1},
                },
                {"class_path": "callbacks.rng_state.RNGState"},
                {"class_path": "callbacks.preemption.PreemptionCheckpoint"},
                {"class_path": "callbacks.loss_guard.LossGuard"},
                {"class_path": "callbacks.throughput.Throughput", "init_args": {"log_every_n_steps": 2}},
                {"class_path": "recorder.Recorder"},
            ],
        },
        "model": {
            "encoders": {"init_args": {"clip_path": str(data / "clip"), "vae_path": str(data / "vae")}}
        },
        "data": {
            "init_args": {
                "train_shards": str(data / "data" / "train"),
                "val_shards": str(data / "data" / "val"),
                "synthetic_root": None,
                "latent_cache_dir": None,  # the pixel stream: its resume, faults and skips
                "num_frames": 4,
                "batch_size": 1,
            }
        },
    }
    for dotted, value in (extra or {}).items():
        node = overlay
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def fit_command(overlay: Path, *args: str) -> list[str]:
    demo = REPO / "configs" / "demo.yaml"
    return [
        sys.executable,
        "-m",
        "unianimate.cli",
        "fit",
        "--config",
        str(demo),
        "--config",
        str(overlay),
        *args,
    ]


def environment(data: Path, record: Path) -> dict[str, str]:
    env = dict(os.environ)
    # One thread per process: bitwise-reproducible reductions and no oversubscription on 2 cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", UA_RECORD=str(record), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(data), str(REPO), env.get("PYTHONPATH", "")])
    return env


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run(command: list[str], env: dict[str, str], log: Path, timeout: float = 240) -> None:
    process = start(command, env, log)
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 0, f"exit {code}:\n{log.read_text()[-4000:]}"


def records(record: Path, rank: int = 0) -> list[dict]:
    path = Path(f"{record}.{rank}")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"process ended early ({process.returncode}):\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGKILL)
            raise TimeoutError(log.read_text()[-4000:])
        time.sleep(0.02)
