"""Inference at paper size: seconds per video and peak GPU memory, with the release's settings.

One video = encode the reference image (CLIP image embedding + VAE latent), the guided DDIM loop
(sampler settings of configs/uni_transformer.yaml: 30 steps, release spacing, guidance 2.5, so two
denoiser passes per timestep), then the VAE decode of every frame in chunks of ``vae_chunk``
(same config) -- the pieces ``UniAnimateModule.generate`` runs, called here directly: the released
denoiser (configs/model/unianimate.yaml, tools/gpu_check_model.py's ``build``: random weights,
heads included), the frozen encoders through ``FrozenEncoders`` from ``save_pretrained`` folders
of the real architectures with random weights (``--encoders release``: CLIP ViT-H/14 as
laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json, the SD 2.1 VAE as stable-diffusion-2-1/vae's;
time and memory do not depend on the values), ``DDIMSampler.sample`` and ``decode_video``.

Variants ``DTYPE:ENCODERS``: weights in DTYPE (float16 / bfloat16) with autocast to DTYPE;
ENCODERS ``resident`` (CLIP and VAE on the GPU throughout) or ``offload`` (kept on the CPU, moved
to the GPU for the encode and for the decode, moved back after; the transfers are timed). Each
variant: one warm-up video (1 DDIM step, decode of one chunk), then ``--repeats`` timed videos.
Peak = max_memory_allocated over the video (weights included), per phase and overall. The
variants run in the order given; past ``--budget-s`` the rest are skipped (and said so).

    python tools/bench_inference.py --json inference.json              # 32 frames, 768 x 512
    python tools/bench_inference.py --device cpu --preset tiny --encoders tiny --frames 2 \\
        --height 64 --width 64 --steps 2 --variants float32:resident
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check_model import PRESETS, _error, _free, build, device_name, peak_gib_cpu  # noqa: E402

from unianimate.batch import VideoBatch
from unianimate.conditions import Conditions, build_conditions  # noqa: E402
from unianimate.diffusion.sampling import DDIMSampler  # noqa: E402
from unianimate.models.frozen import FrozenEncoders, make_tiny_clip, make_tiny_vae  # noqa: E402

RELEASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "uni_transformer.yaml"


def release_settings() -> tuple[dict, int]:
    """The shipped paper-size config's sampler arguments and VAE chunk."""
    model = yaml.safe_load(RELEASE_CONFIG.read_text())["model"]
    return dict(model["sampler"]), int(model["encoders"]["vae_chunk"])


def make_release_clip(path: Path, device: str) -> Path:
    """A random-weight CLIP ViT-H/14 ``CLIPModel`` folder (laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config)."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        ),
        projection_dim=1024,
    )
    with torch.device(device):  # random init on the GPU: seconds instead of a minute on the CPU
        model = CLIPModel(config)
    model.save_pretrained(path)
    return path


def make_release_vae(path: Path, device: str) -> Path:
    """A random-weight SD 2.1 ``AutoencoderKL`` folder (stable-diffusion-2-1/vae's config)."""
    from diffusers import AutoencoderKL

    with torch.device(device):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            act_fn="silu",
            latent_channels=4,
            norm_num_groups=32,
            sample_size=768,
            scaling_factor=0.18215,
        )
    vae.save_pretrained(path)
    return path


def encoder_folders(kind: str, workdir: Path, device: str) -> tuple[Path, Path]:
    """(clip, vae) folders of ``kind`` (release / tiny) under workdir, made once."""
    clip, vae = workdir / kind / "clip", workdir / kind / "vae"
    if not (clip / "config.json").is_file():
        (make_release_clip if kind == "release" else lambda p, d: make_tiny_clip(p))(clip, device)
    if not (vae / "config.json").is_file():
        (make_release_vae if kind == "release" else lambda p, d: make_tiny_vae(p))(vae, device)
    return clip, vae


class Phases:
    """Wall time and peak allocated memory of consecutive phases (CUDA: per phase; CPU: time only)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}

    def run(self, name: str, fn):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_gib[name] = torch.cuda.max_memory_allocated() / 2**30
        self.seconds[name] = time.perf_counter() - t0
        return out


def video(
    denoiser,
    encoders: FrozenEncoders,
    sampler: DDIMSampler,
    frames: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    offload: bool,
    decode_frames: int | None = None,
) -> Phases:
    """One animated video (module docstring); returns its phases. Decodes ``decode_frames`` (all)."""
    device = next(denoiser.parameters()).device
    gen = torch.Generator(device).manual_seed(0)
    ref = torch.rand(1, 3, height, width, device=device, generator=gen) * 2 - 1
    ref_pose = torch.rand(1, 3, height, width, device=device, generator=gen)
    pose = torch.rand(1, 3, frames, height, width, device=device, generator=gen)
    f = encoders.downsample_factor
    phases = Phases(device)

    def encode() -> Conditions:
        if offload:
            encoders.to(device)
        # What predict does: the release feeds the reference to the pixel local-image stream.
        batch = VideoBatch(pose=pose, ref_pose=ref_pose, ref_image=ref)
        _, cond = build_conditions(batch, encoders, denoiser.conditions, training=False)
        if offload:
            encoders.to("cpu")
        return cond

    def decode(latents: torch.Tensor) -> torch.Tensor:
        if offload:
            encoders.to(device)
        out = encoders.decode_video(latents[:, :, :decode_frames])
        if offload:
            encoders.to("cpu")
        return out

    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        cond = phases.run("encode", encode)
        shape = (1, 4, frames, height // f, width // f)
        latents = phases.run("sample", lambda: sampler.sample(denoiser, cond, shape, gen))
        out = phases.run("decode", lambda: decode(latents))
    assert out.shape[-2:] == (height, width), out.shape
    return phases


def run(
    variants: list[str],
    preset: str = "unianimate",
    encoders_kind: str = "release",
    device: str = "cuda",
    frames: int = 32,
    height: int = 768,
    width: int = 512,
    steps: int | None = None,
    repeats: int = 1,
    workdir: Path = Path("/tmp/ua_bench_encoders"),
    budget_s: float = 0.0,
    json_path: Path | None = None,
) -> dict:
    """Rows {dtype, encoders, s_video, s_encode, s_sample, s_decode, peak_gib, ...}; see the module doc."""
    sampler_args, vae_chunk = release_settings()
    if steps is not None:
        sampler_args["num_steps"] = steps
    sampler, warmup = DDIMSampler(**sampler_args), DDIMSampler(**dict(sampler_args, num_steps=1))
    passes = 2 if sampler.guidance_scale != 1.0 else 1
    meta = {"device": device_name(device), "torch": torch.__version__, "preset": preset}
    meta |= {"encoders": encoders_kind, "frames": frames, "height": height, "width": width}
    meta |= {"sampler": sampler_args, "timesteps": len(sampler.timesteps), "vae_chunk": vae_chunk}
    meta |= {"repeats": repeats}
    result = {"meta": meta, "rows": []}
    clip_path, vae_path = encoder_folders(encoders_kind, workdir, device)
    # Loaded once (the user's path: save_pretrained folders through FrozenEncoders), then moved
    # and cast for each variant; the values do not matter.
    encoders = FrozenEncoders(str(clip_path), str(vae_path), vae_chunk=vae_chunk)
    start = time.perf_counter()
    for variant in variants:
        dtype_name, placement = variant.split(":")
        row = {"dtype": dtype_name, "encoders": placement}
        if budget_s and time.perf_counter() - start > budget_s:
            row |= {"error": f"skipped: past the {budget_s:.0f} s budget"}
            result["rows"].append(row)
            continue
        denoiser = None
        try:
            if placement not in ("resident", "offload"):
                raise ValueError(f"encoders placement {placement!r}: expected resident or offload")
            dtype, offload = getattr(torch, dtype_name), placement == "offload"
            denoiser = build("transformer", "torch", preset, device, dtype).eval()
            encoders.to("cpu" if offload else device, dtype)
            denoiser.set_empty_text(encoders.empty_text)
            video(denoiser, encoders, warmup, frames, height, width, dtype, offload, decode_frames=vae_chunk)
            runs = [
                video(denoiser, encoders, sampler, frames, height, width, dtype, offload)
                for _ in range(repeats)
            ]
            best = min(runs, key=lambda p: sum(p.seconds.values()))
            row |= {f"s_{k}": v for k, v in best.seconds.items()}
            row["s_video"] = sum(best.seconds.values())
            row["ms_per_denoiser_call"] = 1e3 * best.seconds["sample"] / (passes * len(sampler.timesteps))
            if best.peak_gib:
                row |= {f"peak_gib_{k}": v for k, v in best.peak_gib.items()}
                row["peak_gib"] = max(best.peak_gib.values())
            else:  # CPU: weights + the profiled peak of one more video
                one = partial(video, denoiser, encoders, sampler, frames, height, width, dtype, offload)
                row["peak_gib"] = peak_gib_cpu(torch.nn.ModuleList([denoiser, encoders]), one)
        except Exception as err:  # noqa: BLE001 - report every variant, whatever broke
            row |= _error(err)
        denoiser = None
        encoders.to("cpu")
        _free(device)
        result["rows"].append(row)
        if json_path:
            Path(json_path).write_text(json.dumps(result, indent=1))
    return result


def _gib(row: dict, key: str) -> str:
    return f"{row[key]:7.2f}" if key in row else f"{'-':>7}"


def format_table(result: dict) -> str:
    m = result["meta"]
    s = m["sampler"]
    lines = [
        f"# {m['device']}, torch {m['torch']}: {m['frames']} frames at {m['height']}x{m['width']}, {m['preset']}"
        f" denoiser, {m['encoders']} CLIP/VAE architectures (random weights)",
        f"# DDIM {s.get('num_steps')} steps ({m['timesteps']} timesteps, {s.get('spacing')} spacing),"
        f" guidance {s.get('guidance_scale')}, VAE decode in chunks of {m['vae_chunk']}; best of {m['repeats']}",
        f"{'dtype':9} {'CLIP/VAE':9} {'s/video':>8} {'encode':>7} {'sample':>7} {'decode':>7}"
        f" {'ms/call':>8} {'peak GiB':>9} {'sample':>7} {'decode':>7}",
    ]
    lines.append("-" * len(lines[-1]))
    for r in result["rows"]:
        lead = f"{r['dtype']:9} {r['encoders']:9}"
        if "error" in r:
            lines.append(f"{lead} {r['error']}")
            continue

        lines.append(
            f"{lead} {r['s_video']:8.2f} {r['s_encode']:7.2f} {r['s_sample']:7.2f} {r['s_decode']:7.2f}"
            f" {r['ms_per_denoiser_call']:8.1f} {r['peak_gib']:9.2f} {_gib(r, 'peak_gib_sample')} {_gib(r, 'peak_gib_decode')}"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--preset", default="unianimate", choices=sorted(PRESETS))
    p.add_argument("--encoders", default="release", choices=["release", "tiny"])
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the release config's)")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["bfloat16:resident", "float16:resident", "float16:offload"],
        help="DTYPE:ENCODERS, ENCODERS resident or offload",
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ua_bench_encoders"))
    p.add_argument("--budget-s", type=float, default=0.0, help="skip the variants left after this (0: none)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_inference.py: --device cuda needs a CUDA GPU (or pass --device cpu)")
    result = run(
        args.variants,
        args.preset,
        args.encoders,
        args.device,
        args.frames,
        args.height,
        args.width,
        args.steps,
        args.repeats,
        args.workdir,
        args.budget_s,
        args.json,
    )
    print(format_table(result))


if __name__ == "__main__":
    main()
