"""Evaluation protocol (SPEC §6) and the accumulator that applies it to generated/ground-truth videos.

Two modes. ``standard`` is this project's own definition; ``disco_compat`` reproduces the
conventions of DisCo's evaluation code (Wangt-CN/DisCo, ``tool/metrics/ssim_l1_lpips_psnr.py`` and
``metric_center.py``), which the TikTok numbers of DisCo, UniAnimate and most follow-ups use.

=========  =======================================  ============================================
metric     standard                                 disco_compat
=========  =======================================  ============================================
input      float [0, 1] as given                    quantised to uint8 (frames saved as PNG/JPG)
L1         mean |a - b| on [0, 1]                   mean |a - b| on [0, 255], divided by H * W
PSNR       data range 1; identical frame -> inf     peak 255 on uint8, float MSE; identical -> 100
SSIM       RGB, gaussian 11x11 (sigma 1.5)          OpenCV grayscale, uniform 7x7, sample
                                                    covariance (skimage defaults)
LPIPS      VGG v0.1, images mapped to [-1, 1]       VGG v0.1, [0, 1] images fed unchanged
FVD        one sample per 16-frame clip; bilinear   one sample per video: mean of its clips'
           resize to 224; I3D logits                logits; bicubic resize to 224; I3D logits
=========  =======================================  ============================================

Frame metrics are means over all frames of all videos. FVD uses the torch eigendecomposition
path of :mod:`unianimate.metrics.fvd`, tested equal to the SciPy ``sqrtm`` reference. Both modes resize frames to
``resolution`` first (bilinear, antialiased) when they differ. DisCo's script subtracted uint8
arrays for PSNR, which wraps around; published tables were corrected (SPEC §6 quotes the corrected
UniAnimate PSNR), and so is ``disco_compat``.
"""

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from unianimate.metrics import frame_metrics as fm
from unianimate.metrics.fvd import fvd_from_features, i3d_input, split_clips
from unianimate.metrics.i3d import load_i3d
from unianimate.metrics.lpips import load_lpips

RANDOM_WEIGHTS = "random (not comparable to published numbers)"


@dataclass(frozen=True)
class EvalProtocol:
    """What is measured and how. Paths are local weight files; ``None`` skips LPIPS / FVD.

    Files whose name starts with ``random_`` (written by ``tools/make_tiny_metric_weights.py``) are
    reported as random weights in the results.
    """

    resolution: tuple[int, int] = (768, 512)  # (H, W): UniAnimate's 512x768 portrait output
    frames_per_clip: int = 16
    stride: int = 1  # temporal subsampling before cutting FVD clips
    num_videos: int | None = None  # None: every held-out video
    seed: int = 0
    mode: Literal["standard", "disco_compat"] = "standard"
    lpips_vgg: str | None = None
    lpips_heads: str | None = None
    i3d: str | None = None
    i3d_size: int = 224  # I3D input side; 224 is what the weights and published FVDs use

    def __post_init__(self) -> None:
        if self.mode not in ("standard", "disco_compat"):
            raise ValueError(f"mode must be 'standard' or 'disco_compat', got {self.mode!r}")
        if (self.lpips_vgg is None) != (self.lpips_heads is None):
            raise ValueError("LPIPS needs both lpips_vgg (VGG16 trunk) and lpips_heads (lpips v0.1 vgg.pth)")

    def select_videos(self, num_available: int) -> list[int]:
        """Indices of the evaluated videos: all, or ``num_videos`` drawn with ``seed``, sorted."""
        if self.num_videos is None or self.num_videos >= num_available:
            return list(range(num_available))
        return sorted(random.Random(self.seed).sample(range(num_available), self.num_videos))

    def weights_label(self) -> str:
        paths = [p for p in (self.lpips_vgg, self.lpips_heads, self.i3d) if p is not None]
        if not paths:
            return "none (LPIPS and FVD not computed)"
        if any(Path(p).name.startswith("random_") for p in paths):
            return RANDOM_WEIGHTS
        return "pretrained"


class VideoMetrics:
    """Accumulates L1, PSNR, SSIM, LPIPS and FVD over videos under an :class:`EvalProtocol`."""

    def __init__(self, protocol: EvalProtocol, device: str | torch.device = "cpu", chunk: int = 8) -> None:
        self.protocol = protocol
        self.device = torch.device(device)
        self.chunk = chunk
        self.lpips = None
        if protocol.lpips_vgg is not None:
            self.lpips = load_lpips(protocol.lpips_vgg, protocol.lpips_heads).to(self.device)
        self.i3d = load_i3d(protocol.i3d).to(self.device) if protocol.i3d is not None else None
        self.reset()

    def reset(self) -> None:
        self.values: dict[str, list[Tensor]] = {"l1": [], "psnr": [], "ssim": [], "lpips": []}
        self.features: dict[str, list[Tensor]] = {"generated": [], "target": []}
        self.num_videos = 0

    def _frames(self, video: Tensor) -> Tensor:
        """(b, 3, f, H, W) uint8/float -> frames (b f, 3, H, W) at the protocol resolution."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected videos (b, 3, f, H, W), got {tuple(video.shape)}")
        frames = rearrange(video, "b c f h w -> (b f) c h w")
        if tuple(frames.shape[-2:]) != tuple(self.protocol.resolution):
            frames = fm.to_float01(frames)
            frames = F.interpolate(frames, size=self.protocol.resolution, mode="bilinear", antialias=True)
        if self.protocol.mode == "disco_compat":
            return fm.to_uint8(frames)
        return frames if frames.dtype == torch.uint8 else fm.to_float01(frames)

    @torch.no_grad()
    def update(self, generated: Tensor, target: Tensor) -> None:
        """generated, target: (b, 3, f, H, W), float in [0, 1] or uint8; b videos of f frames."""
        if generated.shape != target.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ")
        disco = self.protocol.mode == "disco_compat"
        gen, tgt = self._frames(generated), self._frames(target)
        for s in range(0, gen.shape[0], self.chunk):
            g, t = gen[s : s + self.chunk].to(self.device), tgt[s : s + self.chunk].to(self.device)
            self.values["l1"].append((fm.disco_l1 if disco else fm.l1)(g, t).cpu())
            self.values["psnr"].append((fm.disco_psnr if disco else fm.psnr)(g, t).cpu())
            self.values["ssim"].append((fm.disco_ssim if disco else fm.ssim)(g, t).cpu())
            if self.lpips is not None:
                g01, t01 = fm.to_float01(g), fm.to_float01(t)
                if not disco:  # lpips.LPIPS(normalize=True): [0, 1] -> [-1, 1]
                    g01, t01 = g01 * 2 - 1, t01 * 2 - 1
                self.values["lpips"].append(self.lpips(g01, t01).double().cpu())
        if self.i3d is not None:
            b = generated.shape[0]
            for key, frames in (("generated", gen), ("target", tgt)):
                video = rearrange(fm.to_float01(frames), "(b f) c h w -> b c f h w", b=b)
                self.features[key].append(self._i3d_features(video))
        self.num_videos += generated.shape[0]

    def _i3d_features(self, video: Tensor) -> Tensor:
        """(b, 3, f, H, W) in [0, 1] -> (b n, 400) standard, or (b, 400) per-video means for disco."""
        clips = split_clips(video, self.protocol.frames_per_clip, self.protocol.stride)
        b, n = clips.shape[:2]
        clips = rearrange(clips, "b n c t h w -> (b n) c t h w")
        resize = "bicubic" if self.protocol.mode == "disco_compat" else "bilinear"
        logits = []
        for s in range(0, clips.shape[0], self.chunk):
            x = i3d_input(clips[s : s + self.chunk].to(self.device), self.protocol.i3d_size, resize)
            logits.append(self.i3d(x).double().cpu())
        feats = rearrange(torch.cat(logits), "(b n) d -> b n d", b=b, n=n)
        return feats.mean(1) if self.protocol.mode == "disco_compat" else rearrange(feats, "b n d -> (b n) d")

    def snapshot(self) -> dict:
        """What has been accumulated (CPU tensors), for :meth:`merge` on another process."""
        return {
            "values": {k: torch.cat(v) if v else None for k, v in self.values.items()},
            "features": {k: torch.cat(v) if v else None for k, v in self.features.items()},
            "num_videos": self.num_videos,
        }

    def merge(self, snapshots: list[dict]) -> None:
        """Replace the accumulated state by the union of ``snapshots`` (e.g. every rank's, gathered):
        the means and FVD then cover all of them, as one process would have computed."""
        self.reset()
        for snap in snapshots:
            for store, key in ((self.values, "values"), (self.features, "features")):
                for name, tensor in snap[key].items():
                    if tensor is not None:
                        store[name].append(tensor)
            self.num_videos += snap["num_videos"]

    def compute(self) -> dict[str, float | int | str]:
        """Means over frames, FVD over the accumulated features; provenance keys included."""
        if self.num_videos == 0:
            raise RuntimeError("VideoMetrics.compute() called before any update()")
        out: dict[str, float | int | str] = {
            "mode": self.protocol.mode,
            "weights": self.protocol.weights_label(),
        }
        for name, chunks in self.values.items():
            if chunks:
                out[name] = float(torch.cat(chunks).mean())
        out["num_videos"] = self.num_videos
        out["num_frames"] = int(sum(c.numel() for c in self.values["l1"]))
        if self.i3d is not None:
            gen, tgt = torch.cat(self.features["generated"]), torch.cat(self.features["target"])
            out["fvd_samples"] = int(gen.shape[0])
            # A covariance needs at least two samples; report NaN rather than fail the whole run.
            enough = gen.shape[0] >= 2
            out["fvd"] = fvd_from_features(gen.numpy(), tgt.numpy(), backend="torch") if enough else math.nan
        return out


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3e}" if name == "l1" and value != 0 and abs(value) < 1e-2 else f"{value:.4f}"


def format_markdown(results: dict) -> str:
    """A Markdown table of the metric values, with the mode and weight provenance underneath."""
    order = ("l1", "psnr", "ssim", "lpips", "fvd", "pck")
    arrows = {"l1": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓", "fvd": "↓", "pck": "↑"}
    names = [k for k in order if k in results]
    lines = [
        "| " + " | ".join(f"{k.upper()} {arrows[k]}" for k in names) + " |",
        "|" + "---|" * len(names),
        "| " + " | ".join(_fmt(k, float(results[k])) for k in names) + " |",
        "",
        f"mode: {results.get('mode', '?')}; videos: {results.get('num_videos', '?')}; "
        f"frames: {results.get('num_frames', '?')}; weights: {results.get('weights', '?')}",
    ]
    return "\n".join(lines) + "\n"


def write_json(results: dict, path: str | Path) -> None:
    """Write results as strict JSON; non-finite floats (PSNR of identical frames) become strings."""

    def clean(v: object) -> object:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return str(v) if isinstance(v, float) and not math.isfinite(v) else v

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean(results), indent=2) + "\n")
