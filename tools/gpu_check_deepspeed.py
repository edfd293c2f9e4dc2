"""GPU check: DeepSpeed ZeRO-2 on a small preset -- train, save, resume, consolidate -- in < 3 minutes.

    python tools/gpu_check_deepspeed.py [--workdir /tmp/ua_gpu_check] [--steps 6]

Needs one CUDA GPU and ``pip install deepspeed``; no network: the synthetic data and tiny CLIP/VAE
are generated in the work dir. Runs ``unianimate fit`` (configs/demo.yaml + strategy/deepspeed_zero2
+ a GPU overlay, tiny denoiser, bf16) as subprocesses:
  1. fit ``--steps`` steps, ZeRO checkpoint folder every ``--steps // 2`` steps;
  2. resume from that folder's ``last.ckpt`` for ``--steps // 2`` more;
  3. ``tools/convert_checkpoint.py zero`` -> fp32 .ckpt and EMA .safetensors, loaded back strictly.
Prints one table (step time, peak memory, result per phase); exit status 1 if any phase failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]


class StepStats(L.Callback):
    """Step wall times (CUDA-synchronised) and peak allocated memory, written to $UA_GPU_STATS."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self.start)

    def on_fit_end(self, trainer, pl_module) -> None:
        stats = {
            "times": self.times,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "global_step": trainer.global_step,
            "ema_updates": pl_module.ema.num_updates if pl_module.ema is not None else None,
        }
        Path(os.environ["UA_GPU_STATS"]).write_text(json.dumps(stats))


def overlay(work: Path, max_steps: int, every: int) -> Path:
    from unianimate.models.frozen import make_tiny_clip, make_tiny_vae

    # make_tiny_if_missing only fills the demo cache: the stand-ins of this check are made here.
    for folder, make in ((work / "clip", make_tiny_clip), (work / "vae", make_tiny_vae)):
        if not (folder / "config.json").is_file():
            make(folder)
    path = work / f"overlay_{max_steps}.yaml"
    path.write_text(
        f"""
trainer:
  accelerator: gpu
  devices: 1
  precision: bf16-mixed
  max_steps: {max_steps}
  limit_val_batches: 0
  default_root_dir: {work / "run"}
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, every_n_train_steps: {every}, save_top_k: -1}}
    - class_path: callbacks.rng_state.RNGState
    - class_path: callbacks.loss_guard.LossGuard
    - class_path: gpu_check_deepspeed.StepStats
model:
  encoders:
    init_args: {{clip_path: {work / "clip"}, vae_path: {work / "vae"}}}
data:
  init_args:
    train_shards: {work / "data" / "train"}
    val_shards: {work / "data" / "val"}
    synthetic_root: {work / "data"}
    num_frames: 8
    batch_size: 2
    num_workers: 2
"""
    )
    return path


def fit(work: Path, max_steps: int, every: int, *extra: str, timeout: int = 150) -> dict:
    stats = work / f"stats_{max_steps}.json"
    stats.unlink(missing_ok=True)
    configs = [
        "configs/demo.yaml",
        "configs/strategy/deepspeed_zero2.yaml",
        str(overlay(work, max_steps, every)),
    ]
    command = [
        sys.executable,
        "-m",
        "unianimate.cli",
        "fit",
        *(a for c in configs for a in ("--config", c)),
        *extra,
    ]
    env = {**os.environ, "UA_GPU_STATS": str(stats), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tools"), str(REPO), env.get("PYTHONPATH", "")])
    log = work / f"fit_{max_steps}.log"
    with log.open("w") as out:
        code = subprocess.run(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
    if code != 0:
        tail = log.read_text().strip().splitlines()[-15:]
        raise RuntimeError(f"exit {code}; {log}:\n" + "\n".join(tail))
    return json.loads(stats.read_text())


def consolidate(work: Path, steps: int) -> str:
    sys.path.insert(0, str(REPO / "tools"))
    from convert_checkpoint import convert_zero
    from safetensors.torch import load_file

    folder = work / "run" / "checkpoints" / "last.ckpt"
    assert folder.is_dir(), f"expected a ZeRO checkpoint folder at {folder}"
    n = convert_zero(folder, work / "consolidated.ckpt")
    checkpoint = torch.load(work / "consolidated.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == steps, checkpoint["global_step"]
    convert_zero(folder, work / "ema.safetensors", ema=True)
    convert_zero(work / "consolidated.ckpt", work / "model.safetensors")
    model, ema = load_file(work / "model.safetensors"), load_file(work / "ema.safetensors")
    assert model.keys() == ema.keys() and all(v.dtype == torch.float32 for v in model.values())
    return f"{n} tensors in .ckpt, {len(model)} in each .safetensors (model, EMA)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ua_gpu_check"))
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    work, half = args.workdir.resolve(), args.steps // 2
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("run",):
        subprocess.run(["rm", "-rf", str(work / stale)], check=True)
    rows, failed = [], False
    phases = [
        ("fit (ZeRO-2, save)", lambda: fit(work, args.steps, half)),
        (
            "resume --ckpt_path",
            lambda: fit(
                work, args.steps + half, half, "--ckpt_path", str(work / "run" / "checkpoints" / "last.ckpt")
            ),
        ),
        ("consolidate", lambda: consolidate(work, args.steps + half)),
    ]
    for name, phase in phases:
        start = time.perf_counter()
        try:
            out = phase()
        except Exception as exc:  # keep going: one table with every phase's result
            failed = True
            rows.append((name, "-", "-", f"{time.perf_counter() - start:.0f}", f"FAILED: {exc}"))
            continue
        wall = f"{time.perf_counter() - start:.0f}"
        if isinstance(out, dict):
            times = out["times"][1:] or out["times"]
            result = f"ok: global_step {out['global_step']}, EMA updates {out['ema_updates']}"
            rows.append(
                (name, f"{1e3 * statistics.median(times):.1f}", f"{out['peak_gib']:.2f}", wall, result)
            )
        else:
            rows.append((name, "-", "-", wall, f"ok: {out}"))
    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | lightning {L.__version__}")
    print("| phase | ms/step (median) | peak GiB | wall s | result |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
