"""Score a demo sample video: PSNR of the generated panels and of copying the reference, on the mp4.

    python tools/score_demo_video.py runs/demo/version_0/samples/final.mp4 [--height 64 --width 48]

The video (``callbacks.sample_videos.SampleVideos``) stacks one row per sample, each row four
panels side by side: reference | pose | generated | ground truth, ``height`` x ``width`` each. The
frames are decoded from the file itself (so H.264 loss counts, as for anyone who looks at it),
cut into panels, and PSNR (data range 1, per frame, then the mean over frames and samples) is
printed for generated vs ground truth and for the reference frame repeated vs ground truth (the
copy-reference baseline), with their difference. Exit code 0 whatever the numbers.

``--png strip.png`` also writes a picture of it (the README's): one row per chosen frame, each
row reference | pose | generated | ground truth for every sample, enlarged ``--zoom`` times.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from datamodules.format import decode_mp4

PANELS = ("reference", "pose", "generated", "ground_truth")


def split_panels(frames: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """uint8 (f, rows * H, 4 * W (+ padding), 3) -> each panel as (samples, f, H, W, 3)."""
    f, total_h, total_w, _ = frames.shape
    rows = total_h // height
    if rows == 0 or total_w < len(PANELS) * width:
        raise ValueError(f"frames {total_h}x{total_w} hold no {len(PANELS)} panels of {height}x{width}")
    out = {}
    for k, name in enumerate(PANELS):
        panel = frames[:, : rows * height, k * width : (k + 1) * width]
        out[name] = panel.reshape(f, rows, height, width, 3).transpose(1, 0, 2, 3, 4)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR of uint8 (..., H, W, 3) arrays on [0, 1] -> (...)."""
    diff = (a.astype(np.float64) - b.astype(np.float64)) / 255.0
    mse = np.square(diff).reshape(*diff.shape[:-3], -1).mean(-1)
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12))


def score(path: str | Path, height: int = 64, width: int = 48) -> dict[str, float]:
    panels = split_panels(decode_mp4(str(path)), height, width)
    truth = panels["ground_truth"]
    generated = psnr(panels["generated"], truth)
    copied = psnr(panels["reference"], truth)
    return {
        "samples": int(truth.shape[0]),
        "frames": int(truth.shape[1]),
        "psnr_generated": float(generated.mean()),
        "psnr_copy_reference": float(copied.mean()),
        "gain_db": float(generated.mean() - copied.mean()),
        "psnr_generated_per_sample": [round(float(x), 2) for x in generated.mean(1)],
        "psnr_copy_reference_per_sample": [round(float(x), 2) for x in copied.mean(1)],
    }


def write_strip(
    path: str | Path, video: str | Path, frames: list[int], height: int = 64, width: int = 48, zoom: int = 3
) -> Path:
    """A PNG of the chosen frames: rows = frames, columns = the four panels of each sample."""
    from PIL import Image

    decoded = decode_mp4(str(video))
    panels = split_panels(decoded, height, width)
    samples = panels["reference"].shape[0]
    gap = np.full((height, 4, 3), 255, np.uint8)  # white bar between samples
    rows = []
    for f in frames:
        parts = []
        for s in range(samples):
            parts += [panels[name][s, f] for name in PANELS] + ([gap] if s < samples - 1 else [])
        rows.append(np.concatenate(parts, axis=1))
    picture = np.concatenate(rows, axis=0)
    picture = picture.repeat(zoom, axis=0).repeat(zoom, axis=1)
    Image.fromarray(picture).save(path)
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", type=Path)
    parser.add_argument("--height", type=int, default=64, help="panel height (the demo's frame height)")
    parser.add_argument("--width", type=int, default=48, help="panel width (the demo's frame width)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--png", type=Path, help="also write a picture of some frames here")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 3, 7], help="frames for --png")
    parser.add_argument("--zoom", type=int, default=3, help="enlargement for --png")
    args = parser.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"video: no file at '{args.video}'")
    results = score(args.video, args.height, args.width)
    if args.png is not None:
        write_strip(args.png, args.video, args.frames, args.height, args.width, args.zoom)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{args.video}: {results['samples']} samples x {results['frames']} frames")
    print(f"PSNR generated vs ground truth:      {results['psnr_generated']:.2f} dB")
    print(f"PSNR copy reference vs ground truth: {results['psnr_copy_reference']:.2f} dB")
    print(f"generated - copy reference:          {results['gain_db']:+.2f} dB")
    if args.png is not None:
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
