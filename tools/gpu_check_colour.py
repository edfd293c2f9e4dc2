"""GPU check: ``yuv420_to_rgb`` (datamodules/colour.py) on ``--device`` equals the CPU path, bit for bit.

Inputs, for each of the four colour codes (BT.601 / BT.709, limited / full range):
  exhaustive  every (Y, Cb, Cr) triple once: Cb and Cr run over a 256 x 256 chroma plane, the four
              luma samples of each 2 x 2 block over 4 consecutive values, and ``--luma-frames`` (64)
              frames step the luma through all 256 values (16.8 M pixels a colour code);
  random      a batch with a frame axis (b f 3H/2 W) of random bytes, one colour code a sample.
The CPU path is the one tests/test_colour.py checks against FFmpeg's swscale. Exit status 1 on
any difference.

    python tools/gpu_check_colour.py [--device cuda] [--json colour.json]
    python tools/gpu_check_colour.py --device cpu --luma-frames 2     # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from datamodules.colour import COLOUR_CODES, yuv420_to_rgb


def exhaustive_planes(luma_frames: int = 64) -> torch.Tensor:
    """Packed 4:2:0 frames (f, 768, 512) uint8 covering every (Y, Cb, Cr) when luma_frames = 64."""
    values = torch.arange(256, dtype=torch.uint8)
    cb = values.view(256, 1).expand(256, 256)
    cr = values.view(1, 256).expand(256, 256)
    frames = []
    for k in range(luma_frames):
        # 2 x 2 block of luma values 4k, 4k+1 / 4k+2, 4k+3 (mod 256) under every chroma pair
        block = ((4 * k + torch.arange(4)) % 256).to(torch.uint8).view(2, 2)
        y = block.repeat(256, 256)  # (512, 512)
        frames.append(torch.cat([y.flatten(), cb.flatten(), cr.flatten()]).view(768, 512))
    return torch.stack(frames)


def compare(packed: torch.Tensor, colour: torch.Tensor, device: str) -> dict:
    ref = yuv420_to_rgb(packed, colour)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = yuv420_to_rgb(packed.to(device), colour.to(device))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = out.cpu()
    diff = (out.int() - ref.int()).abs()
    return {
        "pixels": ref[:, 0].numel(),
        "equal": bool(torch.equal(out, ref)) and out.dtype == ref.dtype,
        "differing_values": int((diff > 0).sum()),
        "max_abs_diff": int(diff.max()),
        "device_ms": 1e3 * seconds,
    }


def run(device: str = "cuda", luma_frames: int = 64, seed: int = 0) -> list[dict]:
    rows = []
    planes = exhaustive_planes(luma_frames)
    for code, (matrix, full) in sorted(COLOUR_CODES.items()):
        res = compare(planes[None], torch.tensor([code]), device)
        rows.append(
            {"input": "exhaustive", "colour": f"{code} {matrix} {'full' if full else 'limited'}"} | res
        )
    gen = torch.Generator().manual_seed(seed)
    packed = torch.randint(0, 256, (4, 3, 72 * 3 // 2, 88), dtype=torch.uint8, generator=gen)
    res = compare(packed, torch.tensor(sorted(COLOUR_CODES)), device)
    rows.append({"input": "random b f 3H/2 W", "colour": "0 1 2 3 (one a sample)"} | res)
    return rows


def format_table(result: dict) -> str:
    m = result["meta"]
    lines = [f"# yuv420_to_rgb on {m['device']} vs cpu, torch {m['torch']}"]
    lines.append(f"{'input':18} {'colour':24} {'pixels':>10}  result")
    for r in result["rows"]:
        verdict = (
            "bit-identical"
            if r["equal"]
            else f"DIFFERS: {r['differing_values']} values, max {r['max_abs_diff']}"
        )
        lines.append(f"{r['input']:18} {r['colour']:24} {r['pixels']:10,d}  {verdict}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--luma-frames", type=int, default=64, help="64 covers every luma value")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check_colour.py: --device cuda needs a CUDA GPU (or pass --device cpu)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {
        "meta": {"device": name, "torch": torch.__version__},
        "rows": run(args.device, args.luma_frames),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(format_table(result))
    sys.exit(0 if all(r["equal"] for r in result["rows"]) else 1)


if __name__ == "__main__":
    main()
