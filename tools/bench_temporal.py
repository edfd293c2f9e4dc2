"""Benchmark the temporal modules and the selective-scan backends; prints one table.

Rows:
  block  TemporalTransformer (320 ch, 5 heads x 64, the UNet's level-0 module) vs TemporalMamba
         (bidirectional, d_state 16) per scan backend, on the same (1, 320, F, h, w) input.
  scan   the selective scan alone (d_inner 640): the streaming torch scan (and triton / mamba_ssm
         where they run) vs the reference loop `selective_scan_ref`; ratio = ref time / this time.

Time: forward + backward, best of --repeats after one warm-up; on CUDA wall time, on CPU the
process's CPU time with --threads torch threads (default 1: the CPU may be shared, and CPU time of
one thread does not count the time spent waiting for a core). Memory ("peak MiB"), after one warm-up
step (on CPU each config runs in its own subprocess): the peak of the tensor memory allocated during one
step over what was allocated before it (inputs, weights and their existing .grad excluded). On CUDA
from torch.cuda.max_memory_allocated(); on CPU by replaying the allocation/free events that
torch.profiler(profile_memory=True) records for that (separate, untimed) step. Both count tensor
bytes as PyTorch's allocator hands them out, not the allocator's cache or RSS.

    python tools/bench_temporal.py                    # CPU defaults, under 3 minutes on 2 cores
    python tools/bench_temporal.py --device cuda --seqs 6144 --scan-seqs 1024
"""

import argparse
import itertools
import json
import math
import subprocess
import sys
import time

import torch

FRAMES = (16, 32, 64, 128, 256)
SCAN_BACKENDS = ("torch", "triton", "mamba_ssm")


def _cpu_peak_bytes(step) -> int:
    """Peak tensor bytes allocated (net of frees) during step(), from the profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    return max(itertools.accumulate((n for _, n in events), initial=0))


def _block_step(cfg: dict, device: torch.device, dtype: torch.dtype):
    from unianimate.models.temporal_mamba import TemporalMamba
    from unianimate.models.temporal_transformer import TemporalTransformer

    if cfg["kind"] == "transformer":
        module = TemporalTransformer(320, heads=5, head_dim=64)
    else:
        module = TemporalMamba(320, d_state=cfg["d_state"], scan_backend=cfg["backend"])
    module = module.to(device, dtype)
    h = int(math.sqrt(cfg["seqs"]))
    x = torch.randn(
        1, 320, cfg["frames"], h, cfg["seqs"] // h, device=device, dtype=dtype, requires_grad=True
    )
    grad = torch.randn_like(x)
    return lambda: module(x).backward(grad)


def _scan_step(cfg: dict, device: torch.device, dtype: torch.dtype):
    from unianimate.models.selective_scan import get_selective_scan, selective_scan_ref

    fn = selective_scan_ref if cfg["backend"] == "ref" else get_selective_scan(cfg["backend"])
    b, d, n, length = cfg["seqs"], 640, cfg["d_state"], cfg["frames"]
    kw = dict(device=device, dtype=dtype)
    xs = [torch.randn(b, d, length, **kw), torch.randn(b, d, length, **kw) - 2]
    xs += [
        -torch.rand(d, n, device=device) - 0.5,
        torch.randn(b, n, length, **kw),
        torch.randn(b, n, length, **kw),
    ]
    xs += [torch.randn(d, device=device), torch.randn(b, d, length, **kw), torch.randn(d, device=device)]
    xs = [t.requires_grad_() for t in xs]
    grad = torch.randn(b, d, length, **kw)
    return lambda: fn(*xs, delta_softplus=True).backward(grad)


def worker(cfg: dict) -> dict:
    """Run one config in this process; returns time (ms) and peak memory (MiB)."""
    device, dtype = torch.device(cfg["device"]), getattr(torch, cfg["dtype"])
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(cfg["threads"])
    step = (_block_step if cfg["section"] == "block" else _scan_step)(cfg, device, dtype)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.perf_counter if cuda else time.process_time
    step()  # warm-up: first-use allocations, kernel compilation
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _cpu_peak_bytes(step)
    times = []
    for _ in range(cfg["repeats"]):
        t0 = clock()
        step()
        sync()
        times.append(clock() - t0)
    return {"ms": 1000 * min(times), "mib": max(peak, 0) / 2**20}


def _run(cfg: dict, timeout: float) -> dict:
    if cfg["device"] == "cuda":  # CUDA's peak counter resets, so configs can share one process
        try:
            return worker(cfg)
        except Exception as err:  # noqa: BLE001 - report the config and go on
            return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:60]}"}
        finally:
            torch.cuda.empty_cache()
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f}s"}
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["no output"]
        return {"error": lines[-1][:70]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--frames", type=int, nargs="+", default=list(FRAMES))
    p.add_argument("--seqs", type=int, default=16, help="pixels (sequences) for the block rows")
    p.add_argument("--scan-seqs", type=int, default=16, help="sequences for the scan rows")
    p.add_argument("--backends", nargs="+", default=None, help="scan backends (default: all that run here)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    p.add_argument(
        "--d-states", type=int, nargs="+", default=[4, 16], help="d_state values for the scan rows"
    )
    p.add_argument("--ref-max-frames", type=int, default=64, help="longest F for the (slow) reference loop")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per config")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    backends = args.backends
    if backends is None:  # triton only compiles for CUDA (on CPU it runs only in the test interpreter)
        backends = ["torch", "triton", "mamba_ssm"] if args.device == "cuda" else ["torch"]
    base = dict(device=args.device, dtype=args.dtype, repeats=args.repeats, threads=args.threads)
    rows = []  # (section, impl, F, seqs, d_state, result, ratio label)
    for frames in args.frames:
        attn = _run(
            dict(base, section="block", kind="transformer", frames=frames, seqs=args.seqs), args.timeout
        )
        rows.append(("block", "temporal transformer (sdpa)", frames, args.seqs, "-", attn, ""))
        for be in backends:
            cfg = dict(
                base, section="block", kind="mamba", backend=be, frames=frames, seqs=args.seqs, d_state=16
            )
            res = _run(cfg, args.timeout)
            rows.append(
                ("block", f"temporal mamba bidir ({be})", frames, args.seqs, 16, res, _ratio(attn, res))
            )
    for frames in args.frames:
        for d_state in args.d_states:
            scan = dict(base, section="scan", frames=frames, seqs=args.scan_seqs, d_state=d_state)
            if frames <= args.ref_max_frames:
                ref = _run(dict(scan, backend="ref"), args.timeout)
            else:
                ref = {"error": f"skipped (F > --ref-max-frames {args.ref_max_frames})"}
            rows.append(("scan", "selective_scan_ref (loop)", frames, args.scan_seqs, d_state, ref, ""))
            for be in backends:
                res = _run(dict(scan, backend=be), args.timeout)
                rows.append(
                    ("scan", f"selective scan ({be})", frames, args.scan_seqs, d_state, res, _ratio(ref, res))
                )
    _print(rows, args)


def _ratio(base: dict, res: dict) -> str:
    if "ms" not in base or "ms" not in res:
        return ""
    return f"{base['ms'] / res['ms']:.2f}x / {base['mib'] / max(res['mib'], 1e-3):.1f}x"


def _print(rows: list, args: argparse.Namespace) -> None:
    if args.device == "cuda":
        dev = f"{torch.cuda.get_device_name()}, wall ms"
    else:
        dev = f"cpu, {args.threads} torch thread(s), process CPU ms"
    print(f"# {dev}, {args.dtype}, forward+backward, best of {args.repeats}; peak = extra memory of one step")
    print("# ratio = (baseline time / this time) / (baseline peak / this peak); baseline = row above")
    print("#   block rows: baseline = temporal transformer at the same F; scan rows: the reference loop")
    head = f"{'section':7} {'implementation':32} {'F':>4} {'seqs':>5} {'d_state':>7} {'ms':>10} {'peak MiB':>9}  ratio"
    print(head)
    print("-" * len(head) + "-" * 14)
    for section, impl, frames, seqs, d_state, res, ratio in rows:
        if "error" in res:
            cells = f"{'-':>10} {'-':>9}  {res['error']}"
        else:
            cells = f"{res['ms']:10.1f} {res['mib']:9.1f}  {ratio}"
        print(f"{section:7} {impl:32} {frames:4d} {seqs:5d} {d_state!s:>7} {cells}")


if __name__ == "__main__":
    main()
