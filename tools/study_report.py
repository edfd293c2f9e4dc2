"""The reports of ``tools/study.py``: the Markdown tables and the drift plot, from its results."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np

from unianimate.diffusion.long_video import LongVideoMode
from unianimate.metrics.baselines import NAMES as BASELINES
from unianimate.metrics.protocol import RANDOM_WEIGHTS, _fmt

MODES: tuple[str, ...] = get_args(LongVideoMode)  # chain, window, independent


def arms_table(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    names = [k for k in ("l1", "psnr", "ssim", "lpips", "fvd") if k in first["test"]]
    random = first["test"].get("weights") == RANDOM_WEIGHTS
    arrows = {"l1": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓", "fvd": "↓"}
    heads = [
        f"{k.upper()} {arrows[k]}" + (" (random weights)" if random and k in ("lpips", "fvd") else "")
        for k in names
    ]
    full_cpu = results["full"]["fit_cpu_s"] if "full" in results else None
    lines = [
        "| arm | " + " | ".join(heads) + " | steps | fit CPU s | fit CPU vs full |",
        "|---|" + "---|" * (len(names) + 3),
    ]
    for arm, r in results.items():
        cells = [_fmt(k, float(r["test"][k])) for k in names]
        ratio = f"{r['fit_cpu_s'] / full_cpu:.2f}" if full_cpu else "-"
        if full_cpu and (r.get("resumed_from") or results["full"].get("resumed_from")):
            ratio += " (resumed: not comparable)"
        lines.append(
            f"| {arm} | " + " | ".join(cells) + f" | {r['steps']} | {r['fit_cpu_s']:.0f} | {ratio} |"
        )
    for name, label in BASELINES.items():
        cells = [
            _fmt(k, float(first["baselines"][name][k])) if k in first["baselines"][name] else "-"
            for k in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " | | | |")
    t = first["test"]
    lines.append(f"\nheld-out videos: {t['num_videos']}; frames: {t['num_frames']}; weights: {t['weights']}")
    return "\n".join(lines) + "\n"


def pose_table(results: dict[str, dict]) -> str:
    """Pose-following of every arm (``unianimate test``'s ``pose_following`` rows), beside the
    copy-reference and autoencoder rows of the same clips; empty when no arm has them."""
    scored = {arm: r["test"]["pose_following"] for arm, r in results.items() if "pose_following" in r["test"]}
    if not scored:
        return ""
    lines = [
        "| arm | PSNR ↑ | motion-region PSNR ↑ | figure IoU ↑ | pose-swap margin dB (mean / min) ↑ |",
        "|---|---|---|---|---|",
    ]
    first = next(iter(scored.values()))
    rows = [(arm, rows["model"]) for arm, rows in scored.items()]
    rows += [(label, values) for label, values in first.items() if label != "model"]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['psnr']:.2f} | {r['motion_psnr']:.2f} | {r['figure_iou']:.3f} "
            f"| {r['swap_margin']:.2f} / {r['swap_margin_min']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def long_video_table(results: dict[str, dict]) -> str:
    lines = [
        "| arm | mode | PSNR ↑ | first → last segment | seam jump | change inside | seam / inside "
        "| colour Δ vs reference (truth) | colour error | brightness vs reference, first → last | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in results.items():
        lv = r["long_video"]
        truth_delta = float(np.mean(lv["ground_truth"]["colour_delta"]))
        truth_light = lv["ground_truth"]["brightness"]
        for mode in MODES:
            m = lv[mode]
            lines.append(
                f"| {arm} | {mode} | {np.mean(m['psnr']):.2f} | {m['psnr'][0]:.2f} → {m['psnr'][-1]:.2f} "
                f"| {m['seam_jump']:.2f} | {m['inside_change']:.2f} | {m['seam_jump'] / m['inside_change']:.2f} "
                f"| {np.mean(m['colour_delta']):.1f} ({truth_delta:.1f}) | {np.mean(m['colour_error']):.1f} "
                f"| {m['brightness'][0]:+.1f} → {m['brightness'][-1]:+.1f} "
                f"(truth {truth_light[0]:+.1f} → {truth_light[-1]:+.1f}) | {m['seconds']:.0f} |"
            )
    lv = next(iter(results.values()))["long_video"]
    seam_truth = ", ".join(
        f"{mode} {lv[mode]['truth_seam_jump']:.2f} / {lv[mode]['truth_inside_change']:.2f}" for mode in MODES
    )
    lines.append(
        f"\n{lv['num_videos']} held-out video(s) x {lv['num_frames']} frames, segments of {lv['segment_frames']} "
        f"(windows overlap {lv['segment_frames'] // 2}); frame changes and colours in 8-bit levels "
        "(brightness: the figure's mean over RGB minus the reference figure's); "
        f"ground truth seam / inside at the same frames: {seam_truth}"
    )
    return "\n".join(lines) + "\n"


def drift_table(arm: str, lv: dict) -> str:
    cols = [*MODES, "copy reference"]
    lines = [
        f"{arm}: PSNR per segment | colour Δ vs reference",
        "| segment | frames | "
        + " | ".join(cols)
        + " | "
        + " | ".join(f"Δ {m}" for m in MODES)
        + " | Δ truth |",
        "|---|---|" + "---|" * (len(cols) + len(MODES) + 1),
    ]
    for k, (start, stop) in enumerate(lv["segments"]):
        psnrs = [lv[m]["psnr"][k] for m in MODES] + [lv["copy_reference"]["psnr"][k]]
        deltas = [lv[m]["colour_delta"][k] for m in MODES] + [lv["ground_truth"]["colour_delta"][k]]
        lines.append(
            f"| {k} | {start}-{stop - 1} | "
            + " | ".join(f"{v:.2f}" for v in psnrs)
            + " | "
            + " | ".join(f"{v:.1f}" for v in deltas)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(results))
    rows = -(-len(results) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, (arm, r) in zip(axes.flat, results.items()):
        lv = r["long_video"]
        centres = [(start + stop - 1) / 2 for start, stop in lv["segments"]]
        for mode in MODES:
            ax.plot(centres, lv[mode]["psnr"], marker="o", markersize=3, label=mode)
        ax.plot(centres, lv["copy_reference"]["psnr"], color="grey", linestyle="--", label="copy reference")
        ax.set_title(arm)
        ax.set_xlabel("frame")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("PSNR vs ground truth (dB)")
    for ax in list(axes.flat)[len(results) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    videos = f"{lv['num_videos']} held-out long video" + ("s" if lv["num_videos"] != 1 else "")
    fig.suptitle(f"PSNR per segment of {lv['segment_frames']} frames, {videos}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
