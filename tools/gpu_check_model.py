"""Paper-size UniAnimate training step: time, peak memory and MFU, per temporal module and variant.

Builds configs/model/unianimate.yaml (1.42 B parameters; ``--preset tiny`` for a smoke test) with
random weights (the zero-initialised heads filled too, so that no backward runs on zeros), casts
it to ``--dtype`` and runs one training-shaped step (forward, loss, backward; no optimizer) at 512
x 768 pixels (latent 64 x 96), 16 frames (+1 reference frame inside the UNet), batch 1, for the
temporal transformer and the temporal Mamba with each scan backend. Every config runs in its own
try/except; the table says why one did not run.

``--variants`` are applied to the temporal-transformer step from outside the model (STYLE §1):
  eager                 as built
  channels_last         2-D conv weights (and so their activations) in channels-last memory format
  compile               torch.compile of each UNet block (regional: compile time stays in seconds
                        per distinct block shape, where the whole UNet takes minutes)
  compile+channels_last both

MFU = model FLOPs counted by torch.utils.flop_counter on the eager step (matmuls, convolutions,
attention: the scan's elementwise work is not counted; the same count for every variant) / step
time / the matmul rate of --dtype measured here on an 8192^3 product (not the datasheet peak).

    python tools/gpu_check_model.py [--frames 16] [--height 512 --width 768] [--repeats 3]
    python tools/gpu_check_model.py --backends triton --variants eager channels_last compile --json mfu.json
    python tools/gpu_check_model.py --device cpu --preset tiny --height 64 --width 64 --frames 4
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from unianimate.conditions import Conditions
from unianimate.models.temporal import MambaTemporal
from unianimate.models.unet3d import UNet3D
from unianimate.models.unianimate import UniAnimate

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
PRESETS = {"unianimate": CONFIGS / "unianimate.yaml", "tiny": CONFIGS / "tiny.yaml"}
VARIANTS = ("eager", "channels_last", "compile", "compile+channels_last")


def build(
    temporal: str = "transformer",
    scan_backend: str = "torch",
    preset: str = "unianimate",
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    checkpointing: bool = False,
) -> UniAnimate:
    """A shipped preset with the temporal module overridden, random weights, in ``dtype``, train mode.

    Time and memory do not depend on the weights' values, but zeros can: the zero-initialised heads
    (``zero_module``: the UNet's output conv, the temporal modules' projections) would make every
    gradient upstream of the output exactly zero, so they get small random values here.
    """
    init = yaml.safe_load(PRESETS[preset].read_text())["init_args"]
    unet_args = dict(
        init.pop("unet")["init_args"],
        temporal=MambaTemporal(scan_backend=scan_backend) if temporal == "mamba" else temporal,
        checkpointing=checkpointing,
    )
    with torch.device(device):
        model = UniAnimate(UNet3D(**unet_args), **init)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return model.to(dtype).train()


def make_inputs(
    model: UniAnimate, frames: int, height: int, width: int, batch: int = 1
) -> tuple[torch.Tensor, torch.Tensor, Conditions]:
    """x_t (b 4 f h w), t (b,) and every condition, on the model's device and dtype; pixels H x W."""
    p = next(model.parameters())
    kw = dict(device=p.device, dtype=p.dtype)
    b, h, w = batch, height // 8, width // 8
    cond = Conditions(
        pose=torch.rand(b, 3, frames, height, width, **kw),
        ref_pose=torch.rand(b, 3, height, width, **kw),
        ref_latent=torch.randn(b, 4, h, w, **kw),
        clip_embed=torch.randn(b, model.clip_proj.linear_1.in_features, **kw),
        local_image=torch.rand(b, 3, height, width, **kw),
    )
    x = torch.randn(b, 4, frames, h, w, **kw)
    t = torch.randint(0, 1000, (b,), device=p.device)
    return x, t, cond


def apply_variant(model: UniAnimate, variant: str) -> UniAnimate:
    """``eager``, ``channels_last``, ``compile`` or ``compile+channels_last`` (module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if "channels_last" in variant:  # the 2-D convs only (the pose encoders' 3-D weights have no such format)
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.to(memory_format=torch.channels_last)
    if "compile" in variant:
        # One code object (VideoBlock.forward) serves blocks of many shapes: raise the recompile cap
        # (8 by default; past it dynamo silently runs the rest eagerly).
        dynamo = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(dynamo, name):
                setattr(dynamo, name, max(getattr(dynamo, name), 256))
        unet = model.unet
        for block in [unet.temporal_in, *unet.down_blocks, unet.mid_block, *unet.up_blocks]:
            block.compile(dynamic=False)
    return model


def peak_gib_cpu(model: nn.Module, step: Callable[[], None]) -> float:
    """CPU stand-in for max_memory_allocated: weights + buffers + the step's peak tensor bytes
    (replayed from the profiler's memory events by tools/bench_temporal.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_temporal import _cpu_peak_bytes

    held = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return (held + _cpu_peak_bytes(step)) / 2**30


def count_tflop(model: UniAnimate, inputs: tuple) -> float:
    """Model TFLOP of one training step (forward + backward), counted by torch's FlopCounterMode."""
    x, t, cond = inputs
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, t, cond).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e12


def time_step(model: UniAnimate, inputs: tuple, repeats: int) -> dict:
    """One warm-up step (compilation lands here), then ``repeats`` timed: median s, peak GiB."""
    x, t, cond = inputs
    cuda = x.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> None:
        model(x, t, cond).float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    sync()
    t0 = time.perf_counter()
    step()
    sync()
    warmup_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else peak_gib_cpu(model, step)
    return {"step_s": sorted(times)[len(times) // 2], "peak_gib": peak, "warmup_s": warmup_s}


def matmul_tflops(
    device: str = "cuda", dtype: torch.dtype = torch.bfloat16, n: int = 8192, repeats: int = 10
) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def _error(err: BaseException) -> dict:
    return {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:90]}"}


def _free(device: str) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def run_configs(args: argparse.Namespace) -> dict:
    """Rows for the temporal transformer (one per variant) and each Mamba scan backend (eager)."""
    dtype = getattr(torch, args.dtype)
    peak = matmul_tflops(args.device, dtype, n=args.matmul_n)
    meta = {"device": device_name(args.device), "torch": torch.__version__, "matmul_tflops": peak}
    meta |= {k: getattr(args, k) for k in ("preset", "dtype", "frames", "height", "width")}
    meta |= {"repeats": args.repeats, "checkpointing": args.checkpointing}
    result: dict = {"meta": meta, "rows": []}
    # the compiled variants last: their compile time is the least predictable
    configs = [("transformer", "torch", v) for v in args.variants if "compile" not in v]
    configs += [("mamba", be, "eager") for be in args.backends]
    configs += [("transformer", "torch", v) for v in args.variants if "compile" in v]
    flops: dict[str, float] = {}
    model = inputs = None
    start = time.perf_counter()
    for temporal, backend, variant in configs:
        row = {"temporal": temporal, "scan": backend if temporal == "mamba" else "-", "variant": variant}
        if args.budget_s and time.perf_counter() - start > args.budget_s:
            row |= {"error": f"skipped: past the {args.budget_s:.0f} s budget"}
        else:
            try:
                model = build(temporal, backend, args.preset, args.device, dtype, args.checkpointing)
                row["params"] = sum(p.numel() for p in model.parameters())
                inputs = make_inputs(model, args.frames, args.height, args.width)
                if temporal not in flops:  # counted on the eager model; the same for every variant
                    flops[temporal] = count_tflop(model, inputs)
                res = time_step(apply_variant(model, variant), inputs, args.repeats)
                row |= res | {"tflop": flops[temporal], "mfu": flops[temporal] / res["step_s"] / peak}
            except Exception as err:  # noqa: BLE001 - report every config, whatever broke
                row |= _error(err)
            model = inputs = None
            _free(args.device)
        result["rows"].append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def format_table(result: dict) -> str:
    m = result["meta"]
    lines = [
        f"# {m['device']}, torch {m['torch']}, {m['preset']} preset, {m['dtype']} weights and activations",
        f"# batch 1, {m['frames']} frames, {m['height']}x{m['width']} px, checkpointing {m['checkpointing']}",
        f"# forward+backward, median of {m['repeats']}; measured matmul rate {m['matmul_tflops']:.1f} TFLOP/s",
        f"{'temporal':12} {'scan':10} {'variant':22} {'params':>14} {'step s':>8} {'peak GiB':>9}"
        f" {'TFLOP':>8} {'MFU':>6} {'warm-up s':>9}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in result["rows"]:
        lead = f"{r['temporal']:12} {r['scan']:10} {r['variant']:22}"
        if "error" in r:
            lines.append(f"{lead} {r['error']}")
        else:
            lines.append(
                f"{lead} {r['params']:14,d} {r['step_s']:8.3f} {r['peak_gib']:9.2f}"
                f" {r['tflop']:8.2f} {r['mfu']:6.1%} {r['warmup_s']:9.1f}"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--preset", default="unianimate", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every block")
    p.add_argument("--backends", nargs="*", default=["torch", "triton", "mamba_ssm"], help="Mamba scan rows")
    p.add_argument("--variants", nargs="+", default=["eager"], choices=VARIANTS, help="transformer rows")
    p.add_argument("--matmul-n", type=int, default=8192, help="size of the matmul that sets the MFU's peak")
    p.add_argument("--budget-s", type=float, default=0.0, help="skip the configs left after this (0: none)")
    p.add_argument("--json", type=Path, help="write the rows here (after each row)")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check_model.py: --device cuda needs a CUDA GPU (or pass --device cpu)")
    torch.backends.cuda.matmul.allow_tf32 = True
    print(format_table(run_configs(args)))


if __name__ == "__main__":
    main()
