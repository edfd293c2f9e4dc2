"""Time per generated frame of long-video sampling (chain and window) with the tiny model.

    python tools/bench_long_video.py [--model configs/model/tiny.yaml] [--steps 4] [--frames 32 64 128]

Both modes should cost time linear in the number of frames N. Times are CPU seconds of this
process (one thread by default): on a shared machine wall time also measures the neighbours.
"work/frame" is how many frames the model denoises per output frame (segment or window frames
summed over spans / N): in window mode it grows from 1.5 (N = 32) towards F / (F - overlap) = 2
because of the first and the shifted last window, so the per-frame ratio 128 vs 32 is expected to
be about 1.25 there while the cost per denoised frame stays flat.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml
from jsonargparse import ArgumentParser

from unianimate.conditions import Conditions
from unianimate.diffusion.long_video import LongVideo, chain_spans, generate_long_video, window_spans
from unianimate.diffusion.sampling import DDIMSampler
from unianimate.models.unianimate import UniAnimate


def load_model(path: str) -> UniAnimate:
    parser = ArgumentParser()
    parser.add_argument("--model", type=UniAnimate)
    with open(path) as f:
        cfg = parser.parse_object({"model": yaml.safe_load(f)})
    return parser.instantiate(cfg).model.eval()


def time_one(model, sampler, n: int, mode: str, args, repeats: int = 2) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) of `repeats` runs generating n frames.

    CPU time (this process, all threads) is the figure compared: on a shared machine wall time
    also measures the neighbours' load.
    """
    h, w = args.latent
    g = torch.Generator().manual_seed(0)
    cond = Conditions(
        pose=torch.rand(1, 3, n, 8 * h, 8 * w, generator=g),
        ref_pose=torch.rand(1, 3, 8 * h, 8 * w, generator=g),
        ref_latent=torch.randn(1, 4, h, w, generator=g),
        clip_embed=torch.randn(1, model.clip_proj.linear_1.in_features, generator=g),
        local_image=torch.rand(1, 3, 8 * h, 8 * w, generator=g),
    )
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        generate_long_video(
            model,
            cond,
            n,
            sampler,
            (1, 4, h, w),
            torch.Generator().manual_seed(0),
            LongVideo(mode, args.segment_frames, args.overlap),
            progress=False,
        )
        best = min(best, (time.process_time() - cpu, time.perf_counter() - wall))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="configs/model/tiny.yaml")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--frames", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--segment-frames", type=int, default=16)
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--latent", type=int, nargs=2, default=[8, 8], metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = load_model(args.model)
    sampler = DDIMSampler(num_steps=args.steps)
    print(
        f"model {args.model}, {len(sampler.timesteps)} DDIM timesteps, guidance {sampler.guidance_scale}, "
        f"latent {args.latent[0]}x{args.latent[1]}, F={args.segment_frames}, overlap={args.overlap} (window), "
        f"{torch.get_num_threads()} threads"
    )
    with torch.inference_mode():
        time_one(model, sampler, args.frames[0], "chain", args, repeats=1)  # warm-up
        print(
            f"{'mode':<7}{'frames':>7}{'CPU s':>9}{'wall s':>9}{'work/frame':>12}{'CPU ms/frame':>14}"
            f"{'CPU ms/denoised frame':>23}"
        )
        for mode in ("chain", "window"):
            cpu, work = {}, {}
            for n in args.frames:
                cpu[n], wall = time_one(model, sampler, n, mode, args)
                spans = (
                    chain_spans(n, args.segment_frames)
                    if mode == "chain"
                    else window_spans(n, args.segment_frames, args.overlap)
                )
                work[n] = sum(stop - start for start, stop in spans)
                print(
                    f"{mode:<7}{n:>7}{cpu[n]:>9.2f}{wall:>9.2f}{work[n] / n:>12.3f}{1e3 * cpu[n] / n:>14.2f}"
                    f"{1e3 * cpu[n] / work[n]:>23.2f}"
                )
            lo, hi = args.frames[0], args.frames[-1]
            print(
                f"{mode:<7} {hi} vs {lo} frames: CPU per frame ratio {(cpu[hi] / hi) / (cpu[lo] / lo):.3f}, "
                f"per denoised frame {(cpu[hi] / work[hi]) / (cpu[lo] / work[lo]):.3f}"
            )


if __name__ == "__main__":
    main()
