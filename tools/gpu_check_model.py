"""Paper-size UniAnimate on one CUDA GPU: forward + backward step time, peak memory and MFU.

Builds configs/model/unianimate.yaml (1.42 B parameters) in bfloat16 and runs one training-shaped
step (forward, loss, backward; no optimizer) at 512 x 768 pixels (latent 64 x 96), 16 frames (+1
reference frame inside the UNet), batch 1, for the temporal transformer and the temporal Mamba with
each scan backend. Every config runs in its own try/except; the table says why one did not run.

MFU = model FLOPs counted by torch.utils.flop_counter (matmuls, convolutions, attention: the
scan's elementwise work is not counted) / step time / the bf16 matmul rate measured here on an
8192^3 product (not the datasheet peak).

    python tools/gpu_check_model.py [--frames 16] [--height 512 --width 768] [--repeats 3]
"""

import argparse
import gc
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from unianimate.conditions import Conditions
from unianimate.models.temporal import MambaTemporal
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "model" / "unianimate.yaml"


def build(temporal: str, scan_backend: str) -> UniAnimate:
    """The paper-size model from the shipped preset, with the temporal module overridden."""
    init = yaml.safe_load(CONFIG.read_text())["init_args"]
    spec = MambaTemporal(scan_backend=scan_backend) if temporal == "mamba" else temporal
    unet_args = dict(init.pop("unet")["init_args"], temporal=spec)
    with torch.device("cuda"):
        model = UniAnimate(UNet3D(**unet_args), **init)
    return model.to(torch.bfloat16).train()


def matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def run_config(temporal: str, backend: str, args: argparse.Namespace, peak_tflops: float) -> dict:
    model = build(temporal, backend)
    params = sum(p.numel() for p in model.parameters())
    b, f, h, w = 1, args.frames, args.height // 8, args.width // 8
    kw = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(b, 4, f, h, w, **kw)
    t = torch.randint(0, 1000, (b,), device="cuda")
    cond = Conditions(
        pose=torch.rand(b, 3, f, args.height, args.width, **kw),
        ref_pose=torch.rand(b, 3, args.height, args.width, **kw),
        ref_latent=torch.randn(b, 4, h, w, **kw),
        clip_embed=torch.randn(b, 1024, **kw),
        local_image=torch.rand(b, 3, args.height, args.width, **kw),
    )

    def step() -> None:
        model(x, t, cond).float().square().mean().backward()

    counter = FlopCounterMode(display=False)
    with counter:  # warm-up step, also the FLOP count
        step()
    flops = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    return {
        "params": params,
        "step_s": step_s,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "tflop": flops / 1e12,
        "mfu": flops / step_s / 1e12 / peak_tflops,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["torch", "triton", "mamba_ssm"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check_model.py needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_tflops()
    configs = [("transformer", "torch")] + [("mamba", be) for be in args.backends]
    rows = []
    for temporal, backend in configs:
        try:
            rows.append((temporal, backend, run_config(temporal, backend, args, peak)))
        except Exception as err:  # noqa: BLE001 - report every config, whatever broke
            rows.append(
                (temporal, backend, {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"})
            )
        gc.collect()
        torch.cuda.empty_cache()

    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 weights and activations")
    print(
        f"# batch 1, {args.frames} frames, {args.height}x{args.width} px (latent {args.height // 8}x{args.width // 8})"
    )
    print(f"# forward+backward, median of {args.repeats}; measured bf16 matmul rate {peak:.0f} TFLOP/s")
    head = f"{'temporal':12} {'scan':10} {'params':>14} {'step s':>8} {'peak GiB':>9} {'TFLOP':>8} {'MFU':>6}"
    print(head)
    print("-" * len(head))
    for temporal, backend, r in rows:
        scan = backend if temporal == "mamba" else "-"
        if "error" in r:
            print(f"{temporal:12} {scan:10} {r['error']}")
        else:
            print(
                f"{temporal:12} {scan:10} {r['params']:14,d} {r['step_s']:8.3f} {r['peak_gib']:9.1f}"
                f" {r['tflop']:8.1f} {r['mfu']:6.1%}"
            )


if __name__ == "__main__":
    main()
