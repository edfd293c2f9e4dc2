"""GPU check: the paper-size model at batch 2 (temporal attention over b*h*w*heads > 65,535 rows).

Some CUDA attention kernels fail on very large batch dimensions; the temporal modules attend over
frames at every pixel, so at 512x768 and batch 2 the batch is 2*64*96 sequences x 5-20 heads.
Runs forward+backward in bf16 with activation checkpointing on and off (where memory allows),
for sdpa attention, and prints step time and peak memory.

    python tools/gpu_check_batch2.py [--batch 2] [--frames 16]
"""

import argparse
import time
from pathlib import Path

import torch
import yaml

from unianimate.conditions import Conditions
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "unianimate.yaml"


def step(batch: int, frames: int, checkpointing: bool) -> tuple[float, float]:
    init = yaml.safe_load(CONFIG.read_text())["init_args"]
    unet = dict(init.pop("unet")["init_args"], checkpointing=checkpointing)
    with torch.device("cuda"):
        model = UniAnimate(UNet3D(**unet), **init).to(torch.bfloat16).train()
    kw = dict(device="cuda", dtype=torch.bfloat16)
    h, w = 96, 64
    cond = Conditions(
        pose=torch.rand(batch, 3, frames, h * 8, w * 8, **kw),
        ref_pose=torch.rand(batch, 3, h * 8, w * 8, **kw),
        ref_latent=torch.randn(batch, 4, h, w, **kw),
        clip_embed=torch.randn(batch, 1024, **kw),
        local_image=torch.rand(batch, 3, h * 8, w * 8, **kw),
    )
    x = torch.randn(batch, 4, frames, h, w, **kw)
    t = torch.randint(0, 1000, (batch,), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x, t, cond).float().square().mean().backward()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model
    torch.cuda.empty_cache()
    return min(times[1:]), peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}  batch {args.batch}  frames {args.frames}  latent 96x64")
    print(f"{'checkpointing':>14} {'step s':>8} {'peak GiB':>9}  result")
    for checkpointing in (True, False):
        try:
            seconds, peak = step(args.batch, args.frames, checkpointing)
            print(f"{checkpointing!s:>14} {seconds:8.3f} {peak:9.1f}  ok")
        except Exception as exn:  # report and go on: this is a check, not a test
            print(f"{checkpointing!s:>14} {'-':>8} {'-':>9}  {type(exn).__name__}: {str(exn)[:200]}")
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
