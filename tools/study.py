"""The paper's claims at CPU scale: ablations, temporal Mamba and long-video drift, one study.

    python tools/study.py [--quick] [--out runs/study] [--steps N] [--threads 1] [-- CLI overrides]

Every arm trains exactly as ``unianimate fit --config configs/demo.yaml`` does (the same CLI, built
in this process), with one setting changed and the same seed, data and steps:

- ``full``: the demo config with temporal attention;
- ``no_reference_pose`` / ``no_reference_guidance`` / ``no_first_frame``: the ablation configs
  ``configs/ablations/*.yaml`` composed on top;
- ``mamba_bidirectional`` / ``mamba_causal``: temporal Mamba (``--model.denoiser.unet.temporal=mamba``,
  ``configs/ablations/causal_mamba.yaml``).

The budget is the demo config's ``trainer.max_steps`` (``--steps`` sets another). Each arm is then
measured like ``unianimate test``: L1, PSNR, SSIM, LPIPS and FVD on the held-out identities of the
demo data (LPIPS and FVD with random-weight networks unless ``--lpips-vgg``, ``--lpips-heads``,
``--i3d`` name weight files), beside the copy-reference and autoencoder baselines of the same clips.
Then long videos with exact ground truth: held-out synthetic identities rendered for ``--long-frames``
frames, generated in ``chain``, ``window`` and ``independent`` mode (segments of the config's
``model.long_video.segment_frames``, windows overlapping by half of it), measured per segment of
that many frames: PSNR against the truth (the drift curve), seam jumps against the change between
neighbouring frames inside segments, and the figure's mean colour against the reference's
(:mod:`unianimate.metrics.drift`). Writes ``study.md``, ``study.json`` and ``drift.png`` under
``--out``; each arm's results are kept in ``arms/<arm>.json`` as soon as it is done, so a rerun with
the same settings continues where a stopped one ended (an arm's training resumes from its last
checkpoint; the settings are compared, not the contents of the config files: after changing one,
use a new ``--out``). ``--quick``: the same path with 30 steps, one test batch and one long video of 64
frames (a check that everything runs, in minutes; its numbers say nothing about the method).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from study_report import MODES, arms_table, drift_table, long_video_table, plot, pose_table
from torch import Tensor

from datamodules.colour import pack_yuv420
from datamodules.format import decode_mp4_yuv420
from datamodules.synthetic import FPS, figure_mask, make_synthetic_video
from datamodules.video_datamodule import collate, to_float
from unianimate.batch import VideoBatch
from unianimate.checks import LAST_IF_ANY
from unianimate.cli import main as cli_main
from unianimate.conditions import to_unit
from unianimate.diffusion.long_video import LongVideo
from unianimate.errors import InputError, user_errors_as_one_line
from unianimate.metrics import drift
from unianimate.metrics.baselines import copy_reference
from unianimate.metrics.frame_metrics import psnr
from unianimate.metrics.protocol import write_json
from unianimate.video_io import encode_mp4

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "configs" / "ablations"
ARMS: dict[str, list[str]] = {
    "full": [],
    "no_reference_pose": ["--config", str(ABLATIONS / "no_reference_pose.yaml")],
    "no_reference_guidance": ["--config", str(ABLATIONS / "no_reference_guidance.yaml")],
    "no_first_frame": ["--config", str(ABLATIONS / "no_first_frame.yaml")],
    "mamba_bidirectional": ["--model.denoiser.unet.temporal=mamba"],
    "mamba_causal": ["--config", str(ABLATIONS / "causal_mamba.yaml")],
}
# "full" is temporal attention whatever the base config says; the Mamba arms override it after.
PIN = ["--model.denoiser.unet.temporal=transformer"]
# Long videos: identities and motions no split of the demo data uses (train 0.., val 10_000..).
LONG_IDENTITY, LONG_SEED, REF_SEED = 20_000, 5, 6
LEVELS = 255.0  # frame changes and colours are reported in 8-bit levels


@dataclass
class Settings:
    """Everything that fixes the results (a rerun into the same folder must use the same)."""

    configs: list[str] = field(default_factory=lambda: [str(REPO / "configs" / "demo.yaml")])
    steps: int | None = None  # None: the config's trainer.max_steps
    test_batches: int | None = None  # None: every held-out clip
    long_videos: int = 4
    long_frames: int = 128
    threads: int = 1
    lpips_vgg: str | None = None
    lpips_heads: str | None = None
    i3d: str | None = None
    overrides: list[str] = field(default_factory=list)


def arm_args(arm: str, settings: Settings, out: Path) -> list[str]:
    """The ``unianimate fit`` arguments of one arm."""
    run_dir = out / "runs" / arm
    args = [x for config in settings.configs for x in ("--config", config)] + PIN + ARMS[arm]
    args += [
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.enable_progress_bar={str(sys.stdout.isatty()).lower()}",
    ]
    if settings.steps is not None:
        args.append(f"--trainer.max_steps={settings.steps}")
    if settings.test_batches is not None:
        args.append(f"--trainer.limit_test_batches={settings.test_batches}")
    for key in ("lpips_vgg", "lpips_heads", "i3d"):
        if getattr(settings, key) is not None:
            args.append(f"--evaluation.protocol.{key}={getattr(settings, key)}")
    return args + settings.overrides


def long_video_batch(example, num_videos: int, num_frames: int) -> tuple[VideoBatch, Tensor, Tensor]:
    """Held-out long videos through the data path of the held-out clips (lossless H.264, 4:2:0,
    skeletons drawn as ``example`` draws them), each with a reference frame of another motion of
    the same identity -> (float batch, figure masks b f H W, reference figure masks b H W).
    Not ``example`` itself: it cuts clips of its own length and draws the reference from the video."""
    height, width = example.height, example.width
    samples, masks, ref_masks = [], [], []
    for i in range(num_videos):
        identity = LONG_IDENTITY + i
        frames, pose = make_synthetic_video(identity, num_frames, height, width, LONG_SEED * 1_000_003 + i)
        ref_frame, ref_pose = make_synthetic_video(identity, 1, height, width, REF_SEED * 1_000_003 + i)
        mp4 = encode_mp4(np.concatenate([frames, ref_frame]), FPS, crf=0, gop=None, fast_decode=False)
        decoded = decode_mp4_yuv420(mp4)
        packed = torch.from_numpy(pack_yuv420(decoded.y, decoded.uv))
        samples.append(
            {
                "video": packed[:-1],
                "ref_image": packed[-1],
                "video_colour": decoded.colour,
                "pose": example.render(pose),
                "ref_pose": example.render(ref_pose)[0],
                "key": f"long-{identity}",
            }
        )
        masks.append(torch.from_numpy(figure_mask(identity, frames)))
        ref_masks.append(torch.from_numpy(figure_mask(identity, ref_frame)[0]))
    return to_float(collate(samples)), torch.stack(masks), torch.stack(ref_masks)


def per_frame_psnr(video: Tensor, truth: Tensor) -> Tensor:
    """(b, 3, f, H, W) x2 in [0, 1] -> (b, f)."""
    flat = [rearrange(x, "b c f h w -> (b f) c h w") for x in (video, truth)]
    return psnr(*flat).view(video.shape[0], video.shape[2])


def measure_long_video(module, batch: VideoBatch, masks: Tensor, ref_masks: Tensor) -> dict:
    """Generate ``batch`` in every mode with the same seed and measure it against its ground truth."""
    segment = module.long_video.segment_frames
    num_frames = batch.num_frames
    parts = drift.blocks(num_frames, segment)
    truth, ref = to_unit(batch.video).clamp(0, 1), to_unit(batch.ref_image).clamp(0, 1)
    ref_colour = drift.figure_colour(ref.unsqueeze(2), ref_masks.unsqueeze(1))[:, 0]

    def colour_delta(colours: Tensor) -> list[float]:
        return drift.part_means(LEVELS * drift.colour_distance(colours, ref_colour), parts)

    def brightness(colours: Tensor) -> list[float]:  # signed: darker than the reference is negative
        return drift.part_means(LEVELS * (colours - ref_colour.unsqueeze(1)).mean(-1), parts)

    truth_colours = drift.figure_colour(truth, masks)

    out = {
        "segment_frames": segment,
        "num_frames": num_frames,
        "num_videos": len(batch),
        "segments": parts,
        "copy_reference": {
            "psnr": drift.part_means(per_frame_psnr(copy_reference(ref, num_frames), truth), parts)
        },
        "ground_truth": {
            "colour_delta": colour_delta(truth_colours),
            "brightness": brightness(truth_colours),
        },
    }
    original = module.long_video
    try:
        for mode in MODES:
            module.long_video = LongVideo(mode, segment, overlap=segment // 2)
            start = time.perf_counter()
            with torch.no_grad():
                video = to_unit(module.generate(batch, seed=module.hparams.seed)).clamp(0, 1)
            seconds = time.perf_counter() - start
            frame_psnr = per_frame_psnr(video, truth)
            seam_frames = drift.seams(module.long_video.spans(num_frames))
            seam, inside = drift.seam_jump(video, seam_frames)
            truth_seam, truth_inside = drift.seam_jump(truth, seam_frames)
            colours = drift.figure_colour(video, masks)
            out[mode] = {
                "psnr": drift.part_means(frame_psnr, parts),
                "psnr_per_frame": frame_psnr.mean(0).tolist(),
                "seams": seam_frames,
                "seam_jump": LEVELS * seam,
                "inside_change": LEVELS * inside,
                "truth_seam_jump": LEVELS * truth_seam,
                "truth_inside_change": LEVELS * truth_inside,
                "colour_delta": colour_delta(colours),
                "colour_error": drift.part_means(LEVELS * (colours - truth_colours).norm(dim=-1), parts),
                "brightness": brightness(colours),
                "seconds": seconds,
            }
    finally:
        module.long_video = original
    return out


def run_arm(arm: str, settings: Settings, out: Path) -> dict:
    """Train one arm (resuming its last checkpoint if any), test it, measure its long videos."""
    args = arm_args(arm, settings, out)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    cli = cli_main(["fit", *args, f"--ckpt_path={LAST_IF_ANY}"])
    fit_wall, fit_cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    if trainer.global_step < trainer.max_steps:
        raise RuntimeError(
            f"arm {arm}: training stopped at step {trainer.global_step} of {trainer.max_steps}"
        )
    resumed_from = trainer.ckpt_path  # then the fit times cover the rest of the training only
    trainer.test(module, datamodule=datamodule)
    tested = json.loads((Path(trainer.log_dir) / "test_metrics.json").read_text())
    print(
        f"[{arm}] long videos: {settings.long_videos} x {settings.long_frames} frames, modes {', '.join(MODES)}"
    )
    batch, masks, ref_masks = long_video_batch(
        datamodule.test_example, settings.long_videos, settings.long_frames
    )
    return {
        "arm": arm,
        "args": args,
        "steps": trainer.global_step,
        "fit_wall_s": fit_wall,
        "fit_cpu_s": fit_cpu,
        "resumed_from": resumed_from,
        "test": {k: v for k, v in tested.items() if k != "baselines"},
        "baselines": tested["baselines"],
        "long_video": measure_long_video(module, batch.to(module.device), masks, ref_masks),
    }


def run_study(settings: Settings, out: Path, arms: list[str]) -> dict[str, dict]:
    """Run (or continue) the study in ``out``; returns every arm's results and writes the reports."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise InputError(f"--arms: unknown arm(s) {unknown}; expected some of {list(ARMS)}")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "settings.json"
    wanted = asdict(settings)
    if saved.exists() and json.loads(saved.read_text()) != wanted:
        raise InputError(f"--out {out}: holds a study with other settings ({saved}); choose another --out")
    write_json(wanted, saved)
    torch.set_num_threads(settings.threads)
    results = {}
    for i, arm in enumerate(arms, 1):
        done = out / "arms" / f"{arm}.json"
        if done.exists():
            print(f"[{i}/{len(arms)}] {arm}: done before, read from {done}")
            results[arm] = json.loads(done.read_text())
            continue
        print(f"[{i}/{len(arms)}] {arm}: training and measuring ({' '.join(ARMS[arm]) or 'the base config'})")
        start = time.perf_counter()
        results[arm] = run_arm(arm, settings, out)
        write_json(results[arm], done)
        print(f"[{i}/{len(arms)}] {arm}: done in {time.perf_counter() - start:.0f} s")
    report = "\n".join(
        [
            "## Arms (held-out identities)\n",
            arms_table(results),
            "## Pose-following (exact ground truth: motion-region PSNR, figure IoU, pose swap)\n",
            pose_table(results) or "(not measured: the config has no evaluation.pose_swap)\n",
            "## Long videos against ground truth\n",
            long_video_table(results),
            "## Drift per segment\n",
            *(drift_table(arm, r["long_video"]) for arm, r in results.items()),
        ]
    )
    (out / "study.md").write_text(report)
    write_json({"settings": wanted, "arms": results}, out / "study.json")
    png = plot(results, out / "drift.png")
    print("\n" + report)
    print(f"wrote {out / 'study.md'}, {out / 'study.json'} and {png}")
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="30 steps, 1 test batch, 1 long video of 64 frames")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/study[_quick])")
    p.add_argument("--config", action="append", help="base config(s) (default configs/demo.yaml)")
    p.add_argument("--steps", type=int, help="training steps per arm (default: the config's max_steps)")
    p.add_argument("--test-batches", type=int, help="held-out test batches per arm (default: all)")
    p.add_argument("--long-videos", type=int, help="held-out long videos (default 4; --quick 1)")
    p.add_argument("--long-frames", type=int, help="frames of each long video (default 128; --quick 64)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), help=f"a subset of {list(ARMS)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads (changes the float arithmetic)")
    p.add_argument("--lpips-vgg", help="LPIPS VGG16 trunk weights (else random weights)")
    p.add_argument("--lpips-heads", help="LPIPS v0.1 heads (vgg.pth)")
    p.add_argument("--i3d", help="I3D weights for FVD (else random weights)")
    args, overrides = p.parse_known_args(argv)
    # The arms' CLIs get their arguments from here, not from this script's command line.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    overrides = [x for x in overrides if x != "--"]
    bad = [x for x in overrides if not x.startswith("--")]
    if bad:
        raise InputError(f"unexpected argument(s) {bad}: CLI overrides look like --trainer.max_steps=10")
    quick = args.quick
    settings = Settings(
        configs=[str(Path(c).resolve()) for c in args.config] if args.config else Settings().configs,
        steps=args.steps if args.steps is not None else (30 if quick else None),
        test_batches=args.test_batches if args.test_batches is not None else (1 if quick else None),
        long_videos=args.long_videos or (1 if quick else 4),
        long_frames=args.long_frames or (64 if quick else 128),
        threads=args.threads,
        lpips_vgg=args.lpips_vgg,
        lpips_heads=args.lpips_heads,
        i3d=args.i3d,
        overrides=overrides,
    )
    out = args.out or REPO / "runs" / ("study_quick" if quick else "study")
    start = time.perf_counter()
    run_study(settings, out, args.arms)
    print(f"study wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    with user_errors_as_one_line():
        main()
