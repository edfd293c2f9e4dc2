"""Memory and time against frames: one training step of the full UNet, temporal attention vs Mamba.

For each frame count (ascending) and each temporal module, builds the preset with activation
checkpointing of every block (tools/gpu_check_model.py's ``build``: random weights, ``--dtype``
weights and activations), runs one warm-up step and ``--repeats`` timed steps (forward, loss,
backward; no optimizer state) at batch 1, and records the median seconds per step and the peak
memory allocated (weights and gradients included). The temporal Mamba uses ``--scan-backend``
(triton on a GPU). Rows are written to ``--json`` as they come, so a run cut short keeps them;
``--plot`` draws peak GiB and s/step against frames on linear axes (growth linear in frames is a
straight line).

    python tools/bench_frames.py --frames 16 32 64 128 --height 768 --width 512 \\
        --json frames.json --plot frames.png
    python tools/bench_frames.py --device cpu --preset tiny --frames 2 4 --height 64 --width 64 \\
        --scan-backend torch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_model import PRESETS, _error, _free, build, device_name, make_inputs, time_step  # noqa: E402

TEMPORAL = ("transformer", "mamba")


def run(
    frames: list[int],
    temporal: list[str],
    preset: str = "unianimate",
    device: str = "cuda",
    dtype: str = "bfloat16",
    height: int = 768,
    width: int = 512,
    scan_backend: str = "triton",
    checkpointing: bool = True,
    repeats: int = 1,
    budget_s: float = 0.0,
    json_path: Path | None = None,
) -> dict:
    """Rows {temporal, scan, frames, step_s, peak_gib, warmup_s} or {..., error}; see the module doc."""
    meta = {"device": device_name(device), "torch": torch.__version__, "preset": preset, "dtype": dtype}
    meta |= {"height": height, "width": width, "checkpointing": checkpointing, "repeats": repeats}
    result = {"meta": meta, "rows": []}
    start = time.perf_counter()
    for f in sorted(frames):
        for kind in temporal:
            row = {"temporal": kind, "scan": scan_backend if kind == "mamba" else "-", "frames": f}
            if budget_s and time.perf_counter() - start > budget_s:
                row |= {"error": f"skipped: past the {budget_s:.0f} s budget"}
            else:
                model = inputs = None
                try:
                    model = build(kind, scan_backend, preset, device, getattr(torch, dtype), checkpointing)
                    inputs = make_inputs(model, f, height, width)
                    row |= time_step(model, inputs, repeats)
                except Exception as err:  # noqa: BLE001 - an OOM at 128 frames is a result too
                    row |= _error(err)
                model = inputs = None
                _free(device)
            result["rows"].append(row)
            if json_path:
                Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def format_table(result: dict) -> str:
    m = result["meta"]
    lines = [
        f"# {m['device']}, torch {m['torch']}, {m['preset']} preset, {m['dtype']}, batch 1,"
        f" {m['height']}x{m['width']} px, checkpointing {m['checkpointing']}, median of {m['repeats']}",
        "# training step = forward + loss + backward (no optimizer state); peak = max allocated",
        f"{'temporal':12} {'scan':7} {'frames':>6} {'s/step':>8} {'peak GiB':>9}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in result["rows"]:
        lead = f"{r['temporal']:12} {r['scan']:7} {r['frames']:6d}"
        lines.append(
            f"{lead} {r['error']}" if "error" in r else f"{lead} {r['step_s']:8.3f} {r['peak_gib']:9.2f}"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Peak GiB and s/step against frames, one line per temporal module (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "peak_gib", "peak GiB"), (axes[1], "step_s", "s / training step")):
        for kind in dict.fromkeys(r["temporal"] for r in result["rows"]):
            pts = [(r["frames"], r[key]) for r in result["rows"] if r["temporal"] == kind and key in r]
            if not pts:
                continue
            scan = next(r["scan"] for r in result["rows"] if r["temporal"] == kind)
            name = "temporal attention" if kind == "transformer" else f"temporal Mamba ({scan} scan)"
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xticks(sorted({r["frames"] for r in result["rows"]}))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("frames")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{m['device']}: training step with activation checkpointing, {m['height']}x{m['width']},"
        f" {m['dtype']}, batch 1",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--preset", default="unianimate", choices=sorted(PRESETS))
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--temporal", nargs="+", default=list(TEMPORAL), choices=TEMPORAL)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--scan-backend", default="triton", choices=["torch", "triton", "mamba_ssm"])
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=0.0, help="skip the configs left after this (0: none)")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_frames.py: --device cuda needs a CUDA GPU (or pass --device cpu)")
    result = run(
        args.frames,
        args.temporal,
        args.preset,
        args.device,
        args.dtype,
        args.height,
        args.width,
        args.scan_backend,
        args.checkpointing,
        args.repeats,
        args.budget_s,
        args.json,
    )
    print(format_table(result))
    if args.plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
